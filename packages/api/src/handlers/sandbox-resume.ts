/**
 * POST /sandboxes/{id}/resume (deprecated; SDKs use connect): resume a paused sandbox for
 * `timeout` seconds (15 by default, as E2B's) and answer it (201). A running sandbox is a 409
 * ("already running"). `autoPause` may only restate the sandbox's own setting: its node keeps
 * what the create asked for, so a different value is refused rather than ignored.
 */
import { createRoute } from "@hono/zod-openapi";
import type { APIContext } from "../context.js";
import { getTeamSandbox } from "../db/sandboxes.js";
import { NotSupportedError, SandboxConflictError, SandboxNotFoundError } from "../errors.js";
import type { App } from "../http/env.js";
import {
  busyResponse,
  errorJSON,
  errorResponses,
  jsonBody,
  jsonResponse,
  notFoundResponse,
  ResumedSandboxSchema,
  SandboxIDParamsSchema,
  SandboxSchema,
} from "../http/schemas.js";
import { sandboxView } from "../http/views.js";
import { endAfter } from "../sandbox/end-time.js";
import { resumeOrGet } from "../sandbox/resume.js";
import { LIVE_STATES } from "../sandbox/states.js";
import { checkTimeout, SECURITY } from "./shared.js";

const route = createRoute({
  method: "post",
  path: "/sandboxes/{sandboxID}/resume",
  summary: "Resume a paused sandbox (deprecated: use connect)",
  tags: ["sandboxes"],
  security: SECURITY,
  request: { params: SandboxIDParamsSchema, body: jsonBody(ResumedSandboxSchema, false) },
  responses: {
    201: jsonResponse(SandboxSchema, "The sandbox, resumed"),
    ...errorResponses,
    ...notFoundResponse,
    409: errorJSON("Already running, or between states"),
    ...busyResponse,
    501: errorJSON("autoPause differs from the sandbox's own setting"),
  },
});

const DEFAULT_RESUME_TIMEOUT_SECONDS = 15;

export function registerSandboxResume(app: App, ctx: APIContext): void {
  app.openapi(route, async (c) => {
    const { team, limits } = c.get("caller");
    const { sandboxID } = c.req.valid("param");
    const body = c.req.valid("json");
    const timeout = body.timeout ?? DEFAULT_RESUME_TIMEOUT_SECONDS;
    checkTimeout(timeout, limits, "timeout");
    const find = () => getTeamSandbox(ctx.db, team.team_id, sandboxID, LIVE_STATES);
    const row = await find();
    if (!row) throw new SandboxNotFoundError(sandboxID);
    if (body.autoPause !== undefined && body.autoPause !== row.auto_pause) {
      throw new NotSupportedError(
        "changing autoPause on resume is not supported by this moat version; the sandbox keeps the create's setting",
      );
    }
    const reached = await resumeOrGet(ctx, sandboxID, find, {
      endAt: endAfter(timeout),
      reboot: body.memory === false,
    });
    if (!reached.resumed) {
      throw new SandboxConflictError(sandboxID, "running", `sandbox '${sandboxID}' is already running`);
    }
    return c.json(sandboxView(reached.row, ctx.config.domain), 201);
  });
}
