/**
 * A sandbox's log, also after it stopped: the API's lifecycle entries (created, end time changes,
 * stopped) merged with its node's (the start command's output, envd's own lines; sandbox/logs.ts).
 * GET /v2/sandboxes/{id}/logs answers E2B's SandboxLogsV2Response; the older
 * GET /sandboxes/{id}/logs keeps its shape: each `logs[].line` is a JSON object with string
 * `level` and `logger`, which the E2B CLI's `sandbox logs` parses.
 */
import { createRoute, z } from "@hono/zod-openapi";
import type { APIContext } from "../context.js";
import type { App } from "../http/env.js";
import {
  errorResponses,
  jsonResponse,
  notFoundResponse,
  SandboxIDParamsSchema,
  SandboxLogsSchema,
  SandboxLogsV2Schema,
} from "../http/schemas.js";
import { MAX_SANDBOX_LOG_ENTRIES, sandboxLogs } from "../sandbox/logs.js";
import { SECURITY } from "./shared.js";

const Limit = z.coerce
  .number()
  .int()
  .min(1)
  .max(MAX_SANDBOX_LOG_ENTRIES)
  .optional()
  .openapi({ description: `At most ${MAX_SANDBOX_LOG_ENTRIES} (the default)` });

const v1 = createRoute({
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
      limit: Limit,
    }),
  },
  responses: {
    200: jsonResponse(SandboxLogsSchema, "Log entries, oldest first"),
    ...errorResponses,
    ...notFoundResponse,
  },
});

const v2 = createRoute({
  method: "get",
  path: "/v2/sandboxes/{sandboxID}/logs",
  summary: "Get a sandbox's logs (v2)",
  tags: ["sandboxes"],
  security: SECURITY,
  request: {
    params: SandboxIDParamsSchema,
    query: z.object({
      cursor: z.coerce
        .number()
        .int()
        .min(0)
        .optional()
        .openapi({ description: "Unix ms of the first (forward) or last (backward) entry, inclusive" }),
      limit: Limit,
      direction: z
        .enum(["forward", "backward"])
        .optional()
        .openapi({ description: "forward: oldest first (the default); backward: newest first" }),
      level: z
        .enum(["debug", "info", "warn", "error"])
        .optional()
        .openapi({ description: "The lowest level answered" }),
      search: z
        .string()
        .max(256)
        .optional()
        .openapi({ description: "Case-sensitive substring of the message" }),
    }),
  },
  responses: {
    200: jsonResponse(SandboxLogsV2Schema, "Log entries"),
    ...errorResponses,
    ...notFoundResponse,
  },
});

export function registerSandboxLogs(app: App, ctx: APIContext): void {
  app.openapi(v1, async (c) => {
    const { sandboxID } = c.req.valid("param");
    const { start, limit } = c.req.valid("query");
    const entries = await sandboxLogs(ctx, c.get("caller").team.team_id, sandboxID, {
      ...(start !== undefined ? { cursor: start } : {}),
      ...(limit !== undefined ? { limit } : {}),
    });
    return c.json(
      {
        logs: entries.map((e) => ({
          timestamp: e.timestamp.toISOString(),
          line: JSON.stringify({ ...e.fields, level: e.level, message: e.message }),
        })),
        logEntries: entries.map((e) => ({
          timestamp: e.timestamp.toISOString(),
          level: e.level,
          message: e.message,
          fields: e.fields,
        })),
      },
      200,
    );
  });
  app.openapi(v2, async (c) => {
    const { sandboxID } = c.req.valid("param");
    const entries = await sandboxLogs(ctx, c.get("caller").team.team_id, sandboxID, c.req.valid("query"));
    return c.json(
      {
        logs: entries.map((e) => ({
          timestamp: e.timestamp.toISOString(),
          level: e.level,
          message: e.message,
          fields: e.fields,
        })),
      },
      200,
    );
  });
}
