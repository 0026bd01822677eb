/** GET /v2/templates: one page of the team's templates, newest first; X-Next-Token when more follow. */
import { createRoute, z } from "@hono/zod-openapi";
import type { APIContext } from "../context.js";
import type { App } from "../http/env.js";
import { decodePageCursor, encodePageCursor } from "../http/page-cursor.js";
import { errorResponses } from "../http/schemas.js";
import { nextTokenHeaders, PageQuerySchema, TemplateSchema } from "../http/template-schemas.js";
import { templateView } from "../http/template-views.js";
import { listTemplatesPage } from "../template/list.js";
import { SECURITY } from "./shared.js";

const route = createRoute({
  method: "get",
  path: "/v2/templates",
  summary: "List templates",
  tags: ["templates"],
  security: SECURITY,
  request: { query: PageQuerySchema },
  responses: {
    200: {
      description: "A page of templates",
      headers: nextTokenHeaders,
      content: { "application/json": { schema: z.array(TemplateSchema) } },
    },
    ...errorResponses,
  },
});

export function registerTemplatesList(app: App, ctx: APIContext): void {
  app.openapi(route, async (c) => {
    const { limit, nextToken } = c.req.valid("query");
    const team = c.get("caller").team;
    const page = await listTemplatesPage(ctx, team, {
      limit: limit ?? 100,
      after: nextToken ? decodePageCursor(nextToken) : undefined,
    });
    if (page.next) c.header("X-Next-Token", encodePageCursor(page.next));
    return c.json(
      page.templates.map((t) => templateView(team, t.template, t.latest, t.ready)),
      200,
    );
  });
}
