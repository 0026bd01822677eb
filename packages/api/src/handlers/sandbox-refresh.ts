/** POST /sandboxes/{id}/refreshes: keep a sandbox alive `duration` seconds more (at least 15 s); never shortens. */
import { createRoute } from "@hono/zod-openapi";
import type { APIContext } from "../context.js";
import type { App } from "../http/env.js";
import {
  conflictResponse,
  errorResponses,
  jsonBody,
  notFoundResponse,
  SandboxIDParamsSchema,
  SandboxRefreshRequestSchema,
} from "../http/schemas.js";
import { changeEndTime, endAfter } from "../sandbox/end-time.js";
import { checkTimeout, SECURITY } from "./shared.js";

const route = createRoute({
  method: "post",
  path: "/sandboxes/{sandboxID}/refreshes",
  summary: "Extend a sandbox's life",
  tags: ["sandboxes"],
  security: SECURITY,
  request: { params: SandboxIDParamsSchema, body: jsonBody(SandboxRefreshRequestSchema, false) },
  responses: {
    204: { description: "The end time is at least now + duration" },
    ...errorResponses,
    ...notFoundResponse,
    ...conflictResponse,
  },
});

const MIN_REFRESH_SECONDS = 15;

export function registerSandboxRefresh(app: App, ctx: APIContext): void {
  app.openapi(route, async (c) => {
    const { team, limits } = c.get("caller");
    const duration = Math.max(c.req.valid("json").duration ?? MIN_REFRESH_SECONDS, MIN_REFRESH_SECONDS);
    checkTimeout(duration, limits, "duration");
    await changeEndTime(ctx, team.team_id, c.req.valid("param").sandboxID, endAfter(duration), "extend");
    return c.body(null, 204);
  });
}
