/**
 * POST /v3/templates: request a template build (step 1 of the SDK's Template.build). A name the
 * team already has gets a new build of the same template. Answers 202 with the ids the next
 * steps use.
 */
import { createRoute } from "@hono/zod-openapi";
import type { APIContext } from "../context.js";
import type { App } from "../http/env.js";
import { errorResponses, jsonBody, jsonResponse } from "../http/schemas.js";
import { TemplateBuildRequestV3Schema, TemplateRequestResponseV3Schema } from "../http/template-schemas.js";
import { requestBuild } from "../template/request-build.js";
import { SECURITY } from "./shared.js";

const route = createRoute({
  method: "post",
  path: "/v3/templates",
  summary: "Request a template build",
  tags: ["templates"],
  security: SECURITY,
  request: { body: jsonBody(TemplateBuildRequestV3Schema) },
  responses: {
    202: jsonResponse(TemplateRequestResponseV3Schema, "The template and its new build, waiting to start"),
    ...errorResponses,
  },
});

export function registerTemplateRequestBuild(app: App, ctx: APIContext): void {
  app.openapi(route, async (c) => {
    return c.json(await requestBuild(ctx, c.get("caller").team, c.req.valid("json")), 202);
  });
}
