/**
 * POST /sandboxes/{sandboxID}/fork: fork a running sandbox (201 with one result per fork, each a
 * sandbox or the error that kept it from starting). 404 for a sandbox the team does not have,
 * 409 for a paused one (resume it first) or one between states, 400 for a count out of bounds,
 * 429 when the forks would not fit in the team's maxSandboxes.
 */
import { createRoute, z } from "@hono/zod-openapi";
import type { APIContext } from "../context.js";
import type { App } from "../http/env.js";
import {
  errorJSON,
  errorResponses,
  jsonBody,
  jsonResponse,
  notFoundResponse,
  SandboxIDParamsSchema,
} from "../http/schemas.js";
import { SandboxForkRequestSchema, SandboxForkResultSchema } from "../http/snapshot-schemas.js";
import { forkSandbox } from "../sandbox/fork.js";
import { V1_DEFAULT_TIMEOUT_SECONDS } from "./sandbox-create.js";
import { checkTimeout, SECURITY } from "./shared.js";

const route = createRoute({
  method: "post",
  path: "/sandboxes/{sandboxID}/fork",
  summary: "Fork a sandbox",
  tags: ["sandboxes"],
  security: SECURITY,
  request: { params: SandboxIDParamsSchema, body: jsonBody(SandboxForkRequestSchema, false) },
  responses: {
    201: jsonResponse(z.array(SandboxForkResultSchema), "One result per fork"),
    ...errorResponses,
    ...notFoundResponse,
    409: errorJSON("Paused (resume it first), or between states"),
    429: errorJSON("The forks would take the team past its maxSandboxes"),
  },
});

export function registerSandboxFork(app: App, ctx: APIContext): void {
  app.openapi(route, async (c) => {
    const body = c.req.valid("json") ?? {};
    const caller = c.get("caller");
    // E2B's default for a fork's life, as for a create through the first API.
    const timeoutSeconds = body.timeout ?? V1_DEFAULT_TIMEOUT_SECONDS;
    checkTimeout(timeoutSeconds, caller.limits, "timeout");
    const results = await forkSandbox(ctx, caller, c.req.valid("param").sandboxID, {
      count: body.count ?? 1,
      timeoutSeconds,
    });
    return c.json(results, 201);
  });
}
