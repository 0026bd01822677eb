/**
 * POST /v2/sandboxes/{id}/connect (SDK ≥2.51) and POST /sandboxes/{id}/connect (SDK ≤2.50):
 * reach a sandbox by id. A running sandbox answers 200 and its end time moves to now + timeout
 * if that is later (connect never shortens a sandbox's life). A paused sandbox would be resumed
 * (201); this version cannot resume, so it answers 404 as for a sandbox that cannot be resumed.
 */
import { createRoute } from "@hono/zod-openapi";
import type { APIContext } from "../context.js";
import { getTeamSandbox } from "../db/sandboxes.js";
import { SandboxConflictError, SandboxNotFoundError } from "../errors.js";
import type { App } from "../http/env.js";
import {
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
import { changeEndTime } from "../sandbox/end-time.js";
import { checkTimeout, SECURITY } from "./shared.js";

const responses = {
  200: jsonResponse(SandboxSchema, "The sandbox was running"),
  ...errorResponses,
  ...notFoundResponse,
  ...conflictResponse,
};

const connectV2 = createRoute({
  method: "post",
  path: "/v2/sandboxes/{sandboxID}/connect",
  summary: "Connect to a sandbox",
  tags: ["sandboxes"],
  security: SECURITY,
  request: { params: SandboxIDParamsSchema, body: jsonBody(ConnectSandboxV2Schema, false) },
  responses,
});

const connectV1 = createRoute({
  method: "post",
  path: "/sandboxes/{sandboxID}/connect",
  summary: "Connect to a sandbox (SDK ≤2.50)",
  tags: ["sandboxes"],
  security: SECURITY,
  request: { params: SandboxIDParamsSchema, body: jsonBody(ConnectSandboxSchema) },
  responses,
});

const DEFAULT_CONNECT_TIMEOUT_SECONDS = 300;

export function registerSandboxConnect(app: App, ctx: APIContext): void {
  const connect = async (teamID: string, sandboxID: string, timeout: number) => {
    const row = await getTeamSandbox(ctx.db, teamID, sandboxID, ["starting", "running", "paused"]);
    if (!row) throw new SandboxNotFoundError(sandboxID);
    if (row.state === "paused") {
      throw new SandboxNotFoundError(
        sandboxID,
        `sandbox '${sandboxID}' is paused and this moat version cannot resume it`,
      );
    }
    if (row.state === "starting") throw new SandboxConflictError(sandboxID, "starting");
    return changeEndTime(ctx, teamID, sandboxID, timeout, "extend");
  };
  app.openapi(connectV2, async (c) => {
    const { team } = c.get("caller");
    const timeout = c.req.valid("json").timeout ?? DEFAULT_CONNECT_TIMEOUT_SECONDS;
    checkTimeout(timeout, team, "timeout");
    const row = await connect(team.team_id, c.req.valid("param").sandboxID, timeout);
    return c.json(sandboxView(row, ctx.config.domain), 200);
  });
  app.openapi(connectV1, async (c) => {
    const { team } = c.get("caller");
    const { timeout } = c.req.valid("json");
    checkTimeout(timeout, team, "timeout");
    const row = await connect(team.team_id, c.req.valid("param").sandboxID, timeout);
    return c.json(sandboxView(row, ctx.config.domain), 200);
  });
}
