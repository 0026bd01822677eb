/**
 * GET /sandboxes/{id}/logs: the sandbox's lifecycle log (created, end time changes, stopped),
 * also after it stopped. Each `logs[].line` is a JSON object with string `level` and `logger`,
 * which the CLI's `sandbox logs` parses.
 */
import { createRoute, z } from "@hono/zod-openapi";
import type { APIContext } from "../context.js";
import { listSandboxLogs } from "../db/sandbox-logs.js";
import { getTeamSandbox } from "../db/sandboxes.js";
import { SandboxNotFoundError } from "../errors.js";
import type { App } from "../http/env.js";
import {
  errorResponses,
  jsonResponse,
  notFoundResponse,
  SandboxIDParamsSchema,
  SandboxLogsSchema,
} from "../http/schemas.js";
import { LIVE_STATES } from "../sandbox/states.js";
import { SECURITY } from "./shared.js";

const route = createRoute({
  method: "get",
  path: "/sandboxes/{sandboxID}/logs",
  summary: "Get a sandbox's logs",
  tags: ["sandboxes"],
  security: SECURITY,
  request: {
    params: SandboxIDParamsSchema,
    query: z.object({
      start: z.coerce
        .number()
        .int()
        .min(0)
        .optional()
        .openapi({ description: "Unix ms; entries at or after it" }),
      limit: z.coerce.number().int().min(1).max(1000).optional().openapi({ description: "Default 1000" }),
    }),
  },
  responses: {
    200: jsonResponse(SandboxLogsSchema, "Log entries, oldest first"),
    ...errorResponses,
    ...notFoundResponse,
  },
});

/** The `logger` of every line: the API wrote it. */
const LOGGER = "api";

export function registerSandboxLogs(app: App, ctx: APIContext): void {
  app.openapi(route, async (c) => {
    const teamID = c.get("caller").team.team_id;
    const { sandboxID } = c.req.valid("param");
    const { start, limit } = c.req.valid("query");
    const row = await getTeamSandbox(ctx.db, teamID, sandboxID, [...LIVE_STATES, "killed"]);
    if (!row) throw new SandboxNotFoundError(sandboxID);
    const entries = await listSandboxLogs(ctx.db, {
      teamID,
      sandboxID,
      start: start === undefined ? undefined : new Date(start),
      limit: limit ?? 1000,
    });
    return c.json(
      {
        logs: entries.map((e) => ({
          timestamp: e.timestamp.toISOString(),
          line: JSON.stringify({ ...e.fields, level: e.level, logger: LOGGER, message: e.message }),
        })),
        logEntries: entries.map((e) => ({
          timestamp: e.timestamp.toISOString(),
          level: e.level,
          message: e.message,
          fields: { ...e.fields, logger: LOGGER },
        })),
      },
      200,
    );
  });
}
