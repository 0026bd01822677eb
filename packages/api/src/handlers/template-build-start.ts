/**
 * POST /v2/templates/{templateID}/builds/{buildID}: start a requested build (step 3 of
 * Template.build). Answers 202 once the build runs on a node; the SDK then polls its status.
 * A build starts once: a second start is a 409.
 */
import { createRoute } from "@hono/zod-openapi";
import type { APIContext } from "../context.js";
import type { App } from "../http/env.js";
import { errorJSON, errorResponses, jsonBody } from "../http/schemas.js";
import { BuildIDParamsSchema, TemplateBuildStartV2Schema } from "../http/template-schemas.js";
import { startBuild } from "../template/start-build.js";
import { SECURITY } from "./shared.js";

const route = createRoute({
  method: "post",
  path: "/v2/templates/{templateID}/builds/{buildID}",
  summary: "Start a template build",
  tags: ["templates"],
  security: SECURITY,
  request: { params: BuildIDParamsSchema, body: jsonBody(TemplateBuildStartV2Schema) },
  responses: {
    202: { description: "The build runs" },
    ...errorResponses,
    404: errorJSON("No such template or build for this team"),
    409: errorJSON("The build was already started"),
    429: errorJSON("No node can take the build now; retry"),
  },
});

export function registerTemplateBuildStart(app: App, ctx: APIContext): void {
  app.openapi(route, async (c) => {
    const { templateID, buildID } = c.req.valid("param");
    await startBuild(ctx, c.get("caller").team, templateID, buildID, c.req.valid("json"));
    // An explicit empty body: the SDK parses any 2xx but a 204 or a zero Content-Length as JSON.
    return c.body(null, 202, { "Content-Length": "0" });
  });
}
