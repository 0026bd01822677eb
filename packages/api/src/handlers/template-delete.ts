/**
 * DELETE /templates/{templateID}: delete a team's template and its builds (the CLI's `template
 * delete`). 404 (body code 404) when the team has no such template, 409 while sandboxes use it.
 */
import { createRoute } from "@hono/zod-openapi";
import type { APIContext } from "../context.js";
import type { App } from "../http/env.js";
import { errorJSON, errorResponses } from "../http/schemas.js";
import { TemplateIDParamsSchema } from "../http/template-schemas.js";
import { deleteTemplate } from "../template/delete.js";
import { SECURITY } from "./shared.js";

const route = createRoute({
  method: "delete",
  path: "/templates/{templateID}",
  summary: "Delete a template",
  tags: ["templates"],
  security: SECURITY,
  request: { params: TemplateIDParamsSchema },
  responses: {
    204: { description: "Deleted" },
    ...errorResponses,
    404: errorJSON("No such template for this team"),
    409: errorJSON("Running or paused sandboxes use the template"),
  },
});

export function registerTemplateDelete(app: App, ctx: APIContext): void {
  app.openapi(route, async (c) => {
    await deleteTemplate(ctx, c.get("caller").team, c.req.valid("param").templateID);
    return c.body(null, 204);
  });
}
