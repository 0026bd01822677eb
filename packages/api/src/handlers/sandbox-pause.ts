/**
 * POST /sandboxes/{id}/pause: pause a running sandbox (204). Its files, and its memory unless the
 * body says `memory: false`, stay on its node until it is resumed (connect) or killed. A sandbox
 * paused already answers 409 (the SDK's `pause()` then returns false), one between states 409
 * with the state, an unknown one 404.
 */
import { createRoute } from "@hono/zod-openapi";
import type { APIContext } from "../context.js";
import type { App } from "../http/env.js";
import {
  errorJSON,
  errorResponses,
  jsonBody,
  notFoundResponse,
  SandboxIDParamsSchema,
  SandboxPauseRequestSchema,
} from "../http/schemas.js";
import { pauseSandbox } from "../sandbox/pause.js";
import { SECURITY } from "./shared.js";

const route = createRoute({
  method: "post",
  path: "/sandboxes/{sandboxID}/pause",
  summary: "Pause a sandbox",
  tags: ["sandboxes"],
  security: SECURITY,
  request: { params: SandboxIDParamsSchema, body: jsonBody(SandboxPauseRequestSchema, false) },
  responses: {
    204: { description: "Paused" },
    ...errorResponses,
    ...notFoundResponse,
    409: errorJSON("Already paused, or between states"),
  },
});

export function registerSandboxPause(app: App, ctx: APIContext): void {
  app.openapi(route, async (c) => {
    const { memory } = c.req.valid("json");
    await pauseSandbox(ctx, c.get("caller").team.team_id, c.req.valid("param").sandboxID, memory);
    return c.body(null, 204);
  });
}
