/**
 * A sandbox's log as the logs routes serve it: the API's lifecycle entries (table sandbox_logs)
 * merged by time with what its node keeps (the start command's output and envd's own lines, see
 * the orchestrator's telemetry/logs). A node that cannot answer leaves the API's entries alone.
 */
import { timestampDate } from "@bufbuild/protobuf/wkt";
import type { APIContext } from "../context.js";
import { pageSandboxLogs } from "../db/sandbox-logs.js";
import { getTeamSandbox } from "../db/sandboxes.js";
import type { SandboxLogsTable } from "../db/schema.js";
import { SandboxNotFoundError } from "../errors.js";
import { nodeOf } from "./nodes.js";
import { LIVE_STATES } from "./states.js";

export type LogLevel = SandboxLogsTable["level"];
export const LOG_LEVELS: readonly LogLevel[] = ["debug", "info", "warn", "error"];
export const MAX_SANDBOX_LOG_ENTRIES = 1000;

export interface SandboxLogQuery {
  /** Unix ms: the first (forward) or last (backward) time answered, inclusive. */
  cursor?: number;
  limit?: number;
  direction?: "forward" | "backward";
  /** The lowest level answered. */
  level?: LogLevel;
  /** A case-sensitive substring of the message. */
  search?: string;
}

export interface SandboxLogEntryView {
  timestamp: Date;
  level: LogLevel;
  message: string;
  /** Always with `source` (and `logger`, which E2B's CLI reads): who wrote the entry. */
  fields: Record<string, string>;
}

/** The team's sandbox's log page; a sandbox the team does not have is a 404, as it is elsewhere. */
export async function sandboxLogs(
  ctx: APIContext,
  teamID: string,
  sandboxID: string,
  query: SandboxLogQuery,
): Promise<SandboxLogEntryView[]> {
  const row = await getTeamSandbox(ctx.db, teamID, sandboxID, [...LIVE_STATES, "killed"]);
  if (!row) throw new SandboxNotFoundError(sandboxID);
  const limit = Math.min(query.limit ?? MAX_SANDBOX_LOG_ENTRIES, MAX_SANDBOX_LOG_ENTRIES);
  const direction = query.direction ?? "forward";
  const level = query.level ?? "debug";
  const [apiRows, nodeEntries] = await Promise.all([
    pageSandboxLogs(ctx.db, {
      teamID,
      sandboxID,
      direction,
      levels: LOG_LEVELS.slice(LOG_LEVELS.indexOf(level)),
      limit,
      ...(query.cursor !== undefined ? { from: new Date(query.cursor) } : {}),
      ...(query.search ? { search: query.search } : {}),
    }),
    nodeLogs(ctx, row.node_id, sandboxID, { ...query, limit, direction, level }),
  ]);
  const entries: SandboxLogEntryView[] = [
    ...apiRows.map((e) => ({
      timestamp: e.timestamp,
      level: e.level,
      message: e.message,
      fields: { ...e.fields, source: "api", logger: "api" },
    })),
    ...nodeEntries,
  ];
  const sign = direction === "forward" ? 1 : -1;
  // Stable: entries of the same millisecond keep the API's first, then the node's own order.
  entries.sort((a, b) => sign * (a.timestamp.getTime() - b.timestamp.getTime()));
  return entries.slice(0, limit);
}

async function nodeLogs(
  ctx: APIContext,
  nodeID: string,
  sandboxID: string,
  query: SandboxLogQuery & { limit: number; direction: "forward" | "backward" },
): Promise<SandboxLogEntryView[]> {
  try {
    const entries = await nodeOf(ctx, { node_id: nodeID }).logs({ sandboxID, ...query });
    return entries.map((e) => ({
      timestamp: e.timestamp ? timestampDate(e.timestamp) : new Date(0),
      level: LOG_LEVELS.includes(e.level as LogLevel) ? (e.level as LogLevel) : "info",
      message: e.message,
      // The node's source wins over any field of the same name the sandbox wrote.
      fields: { ...e.fields, source: e.source, logger: e.source },
    }));
  } catch (err) {
    ctx.logger.warn({ err, sandboxID, nodeID }, "the sandbox's node did not answer for its log");
    return [];
  }
}
