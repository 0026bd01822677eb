/** GET /templates/{templateID}/tags: a template's tags and the ready builds they name. */
import { createRoute, z } from "@hono/zod-openapi";
import type { APIContext } from "../context.js";
import type { App } from "../http/env.js";
import { errorJSON, errorResponses, jsonResponse } from "../http/schemas.js";
import { TemplateIDParamsSchema, TemplateTagSchema } from "../http/template-schemas.js";
import { listTemplateTags } from "../template/tags.js";
import { SECURITY } from "./shared.js";

const route = createRoute({
  method: "get",
  path: "/templates/{templateID}/tags",
  summary: "List a template's tags",
  tags: ["templates"],
  security: SECURITY,
  request: { params: TemplateIDParamsSchema },
  responses: {
    200: jsonResponse(z.array(TemplateTagSchema), "Tags; default names the latest ready build"),
    ...errorResponses,
    404: errorJSON("No such template for this team"),
  },
});

export function registerTemplateTagsList(app: App, ctx: APIContext): void {
  app.openapi(route, async (c) => {
    const { templateID } = c.req.valid("param");
    return c.json(await listTemplateTags(ctx, c.get("caller").team, templateID), 200);
  });
}
