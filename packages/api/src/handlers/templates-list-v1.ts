/** GET /templates: the team's templates, all at once (the CLI's `template list`; deprecated by E2B). */
import { createRoute, z } from "@hono/zod-openapi";
import type { APIContext } from "../context.js";
import { InvalidRequestError } from "../errors.js";
import type { App } from "../http/env.js";
import { errorResponses, jsonResponse } from "../http/schemas.js";
import { TemplateSchema } from "../http/template-schemas.js";
import { type TemplateView, templateView } from "../http/template-views.js";
import { listTemplatesPage, type TemplatePosition } from "../template/list.js";
import { SECURITY } from "./shared.js";

const route = createRoute({
  method: "get",
  path: "/templates",
  summary: "List templates (deprecated: use GET /v2/templates)",
  tags: ["templates"],
  security: SECURITY,
  request: {
    query: z.object({ teamID: z.string().optional().openapi({ description: "The API key's team" }) }),
  },
  responses: { 200: jsonResponse(z.array(TemplateSchema), "Templates, newest first"), ...errorResponses },
});

export function registerTemplatesListV1(app: App, ctx: APIContext): void {
  app.openapi(route, async (c) => {
    const team = c.get("caller").team;
    const { teamID } = c.req.valid("query");
    if (teamID !== undefined && teamID !== team.team_id) {
      throw new InvalidRequestError(`teamID: '${teamID}' is not the team of the credentials`);
    }
    const templates: TemplateView[] = [];
    let after: TemplatePosition | undefined;
    for (;;) {
      const page = await listTemplatesPage(ctx, team, { limit: 100, after });
      templates.push(...page.templates.map((t) => templateView(team, t.template, t.latest, t.ready)));
      if (!page.next) break;
      after = page.next;
    }
    return c.json(templates, 200);
  });
}
