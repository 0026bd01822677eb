/**
 * GET /templates/{templateID}/builds/{buildID}/status: a build's status and the log entries after
 * `logsOffset` (at most 100; `level` the lowest level answered). `logs` is always empty.
 */
import { createRoute, z } from "@hono/zod-openapi";
import type { APIContext } from "../context.js";
import type { App } from "../http/env.js";
import { errorJSON, errorResponses, jsonResponse } from "../http/schemas.js";
import {
  BuildIDParamsSchema,
  LogPageQuerySchema,
  TemplateBuildInfoSchema,
} from "../http/template-schemas.js";
import { buildStatusView } from "../http/template-views.js";
import { buildStatus } from "../template/build-status.js";
import { SECURITY } from "./shared.js";

const route = createRoute({
  method: "get",
  path: "/templates/{templateID}/builds/{buildID}/status",
  summary: "Get a template build's status and log",
  tags: ["templates"],
  security: SECURITY,
  request: {
    params: BuildIDParamsSchema,
    query: LogPageQuerySchema.extend({
      logsOffset: z.coerce
        .number()
        .int()
        .min(0)
        .optional()
        .openapi({ description: "Log entries to skip (those received so far)" }),
    }),
  },
  responses: {
    200: jsonResponse(TemplateBuildInfoSchema, "The build"),
    ...errorResponses,
    404: errorJSON("No such template or build for this team"),
  },
});

export function registerTemplateBuildStatus(app: App, ctx: APIContext): void {
  app.openapi(route, async (c) => {
    const { templateID, buildID } = c.req.valid("param");
    const status = await buildStatus(ctx, c.get("caller").team, templateID, buildID, c.req.valid("query"));
    return c.json(buildStatusView(status), 200);
  });
}
