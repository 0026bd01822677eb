/** POST /templates/tags: give tags to the build `target` ("name:tag") names. */
import { createRoute } from "@hono/zod-openapi";
import type { APIContext } from "../context.js";
import type { App } from "../http/env.js";
import { errorJSON, errorResponses, jsonBody, jsonResponse } from "../http/schemas.js";
import { AssignedTemplateTagsSchema, AssignTemplateTagsRequestSchema } from "../http/template-schemas.js";
import { assignTemplateTags } from "../template/tags.js";
import { SECURITY } from "./shared.js";

const route = createRoute({
  method: "post",
  path: "/templates/tags",
  summary: "Assign tags to a template build",
  tags: ["templates"],
  security: SECURITY,
  request: { body: jsonBody(AssignTemplateTagsRequestSchema) },
  responses: {
    201: jsonResponse(AssignedTemplateTagsSchema, "The build the tags now name"),
    ...errorResponses,
    404: errorJSON("No such template, or no ready build under the target's tag"),
  },
});

export function registerTemplateTagsAssign(app: App, ctx: APIContext): void {
  app.openapi(route, async (c) => {
    const { target, tags } = c.req.valid("json");
    return c.json(await assignTemplateTags(ctx, c.get("caller").team, target, tags), 201);
  });
}
