/**
 * POST /sandboxes/{id}/timeout: the sandbox now ends `timeout` seconds from now (sooner or later).
 * For a paused sandbox the new end is only recorded: nothing runs to be stopped, and its resume
 * sets the end afresh (see `changeEndTime`).
 */
import { createRoute } from "@hono/zod-openapi";
import type { APIContext } from "../context.js";
import type { App } from "../http/env.js";
import {
  conflictResponse,
  errorResponses,
  jsonBody,
  notFoundResponse,
  SandboxIDParamsSchema,
  SandboxTimeoutRequestSchema,
} from "../http/schemas.js";
import { changeEndTime, endAfter } from "../sandbox/end-time.js";
import { checkTimeout, SECURITY } from "./shared.js";

const route = createRoute({
  method: "post",
  path: "/sandboxes/{sandboxID}/timeout",
  summary: "Set a sandbox's timeout",
  tags: ["sandboxes"],
  security: SECURITY,
  request: { params: SandboxIDParamsSchema, body: jsonBody(SandboxTimeoutRequestSchema) },
  responses: {
    204: { description: "The end time is now + timeout" },
    ...errorResponses,
    ...notFoundResponse,
    ...conflictResponse,
  },
});

export function registerSandboxTimeout(app: App, ctx: APIContext): void {
  app.openapi(route, async (c) => {
    const { team, limits } = c.get("caller");
    const { timeout } = c.req.valid("json");
    checkTimeout(timeout, limits, "timeout");
    await changeEndTime(ctx, team.team_id, c.req.valid("param").sandboxID, endAfter(timeout), "set");
    return c.body(null, 204);
  });
}
