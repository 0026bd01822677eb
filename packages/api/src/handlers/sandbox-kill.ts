/** DELETE /sandboxes/{id}: kill a sandbox (running or paused). A second kill is a 404. */
import { createRoute } from "@hono/zod-openapi";
import type { APIContext } from "../context.js";
import type { App } from "../http/env.js";
import {
  conflictResponse,
  errorResponses,
  notFoundResponse,
  SandboxIDParamsSchema,
} from "../http/schemas.js";
import { killSandbox } from "../sandbox/kill.js";
import { SECURITY } from "./shared.js";

const route = createRoute({
  method: "delete",
  path: "/sandboxes/{sandboxID}",
  summary: "Kill a sandbox",
  tags: ["sandboxes"],
  security: SECURITY,
  request: { params: SandboxIDParamsSchema },
  responses: { 204: { description: "Killed" }, ...errorResponses, ...notFoundResponse, ...conflictResponse },
});

export function registerSandboxKill(app: App, ctx: APIContext): void {
  app.openapi(route, async (c) => {
    await killSandbox(ctx, c.get("caller").team.team_id, c.req.valid("param").sandboxID);
    return c.body(null, 204);
  });
}
