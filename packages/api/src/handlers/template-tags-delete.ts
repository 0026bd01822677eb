/** DELETE /templates/tags: take tags from a template (the builds they named keep existing). */
import { createRoute } from "@hono/zod-openapi";
import type { APIContext } from "../context.js";
import type { App } from "../http/env.js";
import { errorJSON, errorResponses, jsonBody } from "../http/schemas.js";
import { DeleteTemplateTagsRequestSchema } from "../http/template-schemas.js";
import { removeTemplateTags } from "../template/tags.js";
import { SECURITY } from "./shared.js";

const route = createRoute({
  method: "delete",
  path: "/templates/tags",
  summary: "Delete template tags",
  tags: ["templates"],
  security: SECURITY,
  request: { body: jsonBody(DeleteTemplateTagsRequestSchema) },
  responses: {
    204: { description: "Deleted" },
    ...errorResponses,
    404: errorJSON("No such template for this team"),
  },
});

export function registerTemplateTagsDelete(app: App, ctx: APIContext): void {
  app.openapi(route, async (c) => {
    const { name, tags } = c.req.valid("json");
    await removeTemplateTags(ctx, c.get("caller").team, name, tags);
    return c.body(null, 204);
  });
}
