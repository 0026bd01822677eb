/** GET /v2/templates: one page of the team's templates, newest first; X-Next-Token when more follow. */
import { createRoute, z } from "@hono/zod-openapi";
import type { APIContext } from "../context.js";
import type { App } from "../http/env.js";
import { decodePageCursor } from "../http/page-cursor.js";
import { errorResponses } from "../http/schemas.js";
import { nextTokenHeaders, PageQuerySchema, TemplateSchema } from "../http/template-schemas.js";
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
    const page = await listTemplatesPage(ctx, c.get("caller").team, {
      limit: limit ?? 100,
      after: nextToken ? decodePageCursor(nextToken) : undefined,
    });
    if (page.nextToken) c.header("X-Next-Token", page.nextToken);
    return c.json(page.templates, 200);
  });
}
