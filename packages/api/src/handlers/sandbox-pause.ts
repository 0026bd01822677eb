/**
 * POST /sandboxes/{id}/pause and POST /sandboxes/{id}/resume. Pause and resume need memory
 * snapshots on the node, which this version does not have: a sandbox of the team gets 501 with a
 * clear message (the SDK throws it as a SandboxError), an unknown one 404 as everywhere else.
 */
import { createRoute } from "@hono/zod-openapi";
import type { APIContext } from "../context.js";
import { getTeamSandbox } from "../db/sandboxes.js";
import { NotSupportedError, SandboxNotFoundError } from "../errors.js";
import type { App } from "../http/env.js";
import {
  errorJSON,
  errorResponses,
  jsonBody,
  notFoundResponse,
  ResumedSandboxSchema,
  SandboxIDParamsSchema,
  SandboxPauseRequestSchema,
} from "../http/schemas.js";
import { SECURITY } from "./shared.js";

export const PAUSE_NOT_SUPPORTED = "pause is not supported yet by this moat version";

const pause = createRoute({
  method: "post",
  path: "/sandboxes/{sandboxID}/pause",
  summary: "Pause a sandbox (not supported yet: 501)",
  tags: ["sandboxes"],
  security: SECURITY,
  request: { params: SandboxIDParamsSchema, body: jsonBody(SandboxPauseRequestSchema, false) },
  responses: {
    204: { description: "Paused" },
    ...errorResponses,
    ...notFoundResponse,
    409: errorJSON("Already paused"),
    501: errorJSON(PAUSE_NOT_SUPPORTED),
  },
});

const resume = createRoute({
  method: "post",
  path: "/sandboxes/{sandboxID}/resume",
  summary: "Resume a paused sandbox (deprecated; not supported yet: 501)",
  tags: ["sandboxes"],
  security: SECURITY,
  request: { params: SandboxIDParamsSchema, body: jsonBody(ResumedSandboxSchema, false) },
  responses: {
    ...errorResponses,
    ...notFoundResponse,
    501: errorJSON(PAUSE_NOT_SUPPORTED),
  },
});

export function registerSandboxPause(app: App, ctx: APIContext): void {
  const refuse = async (teamID: string, sandboxID: string): Promise<never> => {
    const row = await getTeamSandbox(ctx.db, teamID, sandboxID, ["starting", "running", "paused"]);
    if (!row) throw new SandboxNotFoundError(sandboxID);
    throw new NotSupportedError(PAUSE_NOT_SUPPORTED);
  };
  app.openapi(pause, (c) => refuse(c.get("caller").team.team_id, c.req.valid("param").sandboxID));
  app.openapi(resume, (c) => refuse(c.get("caller").team.team_id, c.req.valid("param").sandboxID));
}
