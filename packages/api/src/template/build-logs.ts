/**
 * A build's log by time (GET /templates/{id}/builds/{buildID}/logs): from a `from` time, forwards
 * or newest first, continued page by page after the last entry's ordinal. The entries are those
 * the status polls answer, read from the database while the build runs and after it ends.
 */
import type { APIContext } from "../context.js";
import type { TeamRow, TemplateBuildLogRow, TemplateBuildLogsTable } from "../db/schema.js";
import { pageBuildLogs } from "../db/template-builds.js";
import { LOG_LEVELS, MAX_LOG_ENTRIES } from "./build-status.js";
import { findOwnBuild } from "./resolve.js";

export interface LogsQuery {
  /** The first (forward) or last (backward) time answered. */
  from?: Date;
  /** The ordinal of the previous page's last entry: the page carries on past it. */
  afterOrdinal?: number;
  limit?: number;
  direction?: "forward" | "backward";
  level?: TemplateBuildLogsTable["level"];
}

export async function buildLogs(
  ctx: APIContext,
  team: TeamRow,
  templateRef: string,
  buildID: string,
  query: LogsQuery,
): Promise<{ entries: TemplateBuildLogRow[]; nextAfterOrdinal?: number }> {
  await findOwnBuild(ctx.db, team, templateRef, buildID);
  const limit = Math.min(query.limit ?? MAX_LOG_ENTRIES, MAX_LOG_ENTRIES);
  // One more than asked tells whether another page follows.
  const rows = await pageBuildLogs(ctx.db, {
    buildID,
    levels: LOG_LEVELS.slice(LOG_LEVELS.indexOf(query.level ?? "debug")),
    direction: query.direction ?? "forward",
    ...(query.from !== undefined ? { from: query.from } : {}),
    ...(query.afterOrdinal !== undefined ? { afterOrdinal: query.afterOrdinal } : {}),
    limit: limit + 1,
  });
  const entries = rows.slice(0, limit);
  const last = entries.at(-1);
  return { entries, ...(rows.length > limit && last ? { nextAfterOrdinal: last.ordinal } : {}) };
}
