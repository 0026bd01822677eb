/** GET /templates/{templateID}: a team's template with one page of its builds, newest first. */
import { createRoute } from "@hono/zod-openapi";
import type { APIContext } from "../context.js";
import { listBuilds } from "../db/template-builds.js";
import type { App } from "../http/env.js";
import { decodePageCursor, encodePageCursor } from "../http/page-cursor.js";
import { errorJSON, errorResponses } from "../http/schemas.js";
import {
  nextTokenHeaders,
  PageQuerySchema,
  TemplateIDParamsSchema,
  TemplateWithBuildsSchema,
} from "../http/template-schemas.js";
import { templateWithBuildsView } from "../http/template-views.js";
import { findOwnTemplate } from "../template/resolve.js";
import { SECURITY } from "./shared.js";

const route = createRoute({
  method: "get",
  path: "/templates/{templateID}",
  summary: "Get a template and its builds",
  tags: ["templates"],
  security: SECURITY,
  request: { params: TemplateIDParamsSchema, query: PageQuerySchema },
  responses: {
    200: {
      description: "The template with a page of its builds",
      headers: nextTokenHeaders,
      content: { "application/json": { schema: TemplateWithBuildsSchema } },
    },
    ...errorResponses,
    404: errorJSON("No such template for this team"),
  },
});

export function registerTemplateGet(app: App, ctx: APIContext): void {
  app.openapi(route, async (c) => {
    const team = c.get("caller").team;
    const { limit = 100, nextToken } = c.req.valid("query");
    const template = await findOwnTemplate(ctx.db, team, c.req.valid("param").templateID);
    const rows = await listBuilds(ctx.db, template.template_id, {
      limit: limit + 1,
      after: nextToken ? decodePageCursor(nextToken) : undefined,
    });
    const builds = rows.slice(0, limit);
    const last = builds.at(-1);
    if (rows.length > limit && last) {
      c.header("X-Next-Token", encodePageCursor({ time: last.created_at, id: last.build_id }));
    }
    return c.json(templateWithBuildsView(team, template, builds), 200);
  });
}
