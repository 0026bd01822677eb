/**
 * POST /v2/sandboxes/{id}/connect (SDK ≥2.51) and POST /sandboxes/{id}/connect (SDK ≤2.50):
 * reach a sandbox by id. A running sandbox answers 200, a paused one is resumed and answers 201
 * (`memory: false` boots it afresh from its files: the SDK's `onResume: 'reboot'`). Either way its
 * end time moves to now + timeout if that is later (connect never shortens a sandbox's life).
 */
import { createRoute } from "@hono/zod-openapi";
import type { APIContext } from "../context.js";
import type { App } from "../http/env.js";
import {
  busyResponse,
  ConnectSandboxSchema,
  ConnectSandboxV2Schema,
  conflictResponse,
  errorResponses,
  jsonBody,
  jsonResponse,
  notFoundResponse,
  SandboxIDParamsSchema,
  SandboxSchema,
} from "../http/schemas.js";
import { sandboxView } from "../http/views.js";
import { connectSandbox } from "../sandbox/connect.js";
import { checkTimeout, SECURITY } from "./shared.js";

const responses = {
  200: jsonResponse(SandboxSchema, "The sandbox was running"),
  201: jsonResponse(SandboxSchema, "The sandbox was paused and is resumed"),
  ...errorResponses,
  ...notFoundResponse,
  ...conflictResponse,
  ...busyResponse,
};

const connectV2 = createRoute({
  method: "post",
  path: "/v2/sandboxes/{sandboxID}/connect",
  summary: "Connect to a sandbox, resuming it if paused",
  tags: ["sandboxes"],
  security: SECURITY,
  request: { params: SandboxIDParamsSchema, body: jsonBody(ConnectSandboxV2Schema, false) },
  responses,
});

const connectV1 = createRoute({
  method: "post",
  path: "/sandboxes/{sandboxID}/connect",
  summary: "Connect to a sandbox, resuming it if paused (SDK ≤2.50)",
  tags: ["sandboxes"],
  security: SECURITY,
  request: { params: SandboxIDParamsSchema, body: jsonBody(ConnectSandboxSchema) },
  responses,
});

const DEFAULT_CONNECT_TIMEOUT_SECONDS = 300;

export function registerSandboxConnect(app: App, ctx: APIContext): void {
  app.openapi(connectV2, async (c) => {
    const { team, limits } = c.get("caller");
    const body = c.req.valid("json");
    const timeout = body.timeout ?? DEFAULT_CONNECT_TIMEOUT_SECONDS;
    checkTimeout(timeout, limits, "timeout");
    const { row, resumed } = await connectSandbox(ctx, team.team_id, c.req.valid("param").sandboxID, {
      timeoutSeconds: timeout,
      reboot: body.memory === false,
    });
    return c.json(sandboxView(row, ctx.config.domain), resumed ? 201 : 200);
  });
  app.openapi(connectV1, async (c) => {
    const { team, limits } = c.get("caller");
    const body = c.req.valid("json");
    checkTimeout(body.timeout, limits, "timeout");
    const { row, resumed } = await connectSandbox(ctx, team.team_id, c.req.valid("param").sandboxID, {
      timeoutSeconds: body.timeout,
      reboot: body.memory === false,
    });
    return c.json(sandboxView(row, ctx.config.domain), resumed ? 201 : 200);
  });
}
