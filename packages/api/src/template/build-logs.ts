/**
 * A build's log by time (GET /templates/{id}/builds/{buildID}/logs): from a millisecond `cursor`,
 * forwards or newest first, continued page by page with the opaque `nextCursor`. The entries are
 * those the status polls answer, read from the database while the build runs and after it ends.
 */
import type { APIContext } from "../context.js";
import type { TeamRow, TemplateBuildLogsTable } from "../db/schema.js";
import { pageBuildLogs } from "../db/template-builds.js";
import { InvalidRequestError } from "../errors.js";
import { buildLogEntryView } from "../http/template-views.js";
import { LOG_LEVELS, MAX_LOG_ENTRIES } from "./build-status.js";
import { findOwnBuild } from "./resolve.js";

export interface LogsQuery {
  /** Milliseconds since the epoch: the first (forward) or last (backward) time answered. */
  cursor?: number;
  /** The `nextCursor` of the previous page; it carries on past that page's last entry. */
  pageCursor?: string;
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
) {
  await findOwnBuild(ctx.db, team, templateRef, buildID);
  const limit = Math.min(query.limit ?? MAX_LOG_ENTRIES, MAX_LOG_ENTRIES);
  // One more than asked tells whether another page follows.
  const rows = await pageBuildLogs(ctx.db, {
    buildID,
    levels: LOG_LEVELS.slice(LOG_LEVELS.indexOf(query.level ?? "debug")),
    direction: query.direction ?? "forward",
    ...(query.cursor !== undefined ? { from: new Date(query.cursor) } : {}),
    ...(query.pageCursor !== undefined ? { afterOrdinal: decodePageCursor(query.pageCursor) } : {}),
    limit: limit + 1,
  });
  const page = rows.slice(0, limit);
  const last = page.at(-1);
  return {
    logs: page.map((row) => ({ id: String(row.ordinal), ...buildLogEntryView(row) })),
    ...(rows.length > limit && last ? { nextCursor: encodePageCursor(last.ordinal) } : {}),
    // Entries are stored as they arrive, so there is one source for live and finished builds.
    source: "persistent" as const,
  };
}

function encodePageCursor(ordinal: number): string {
  return Buffer.from(`log:${ordinal}`).toString("base64url");
}

function decodePageCursor(cursor: string): number {
  const match = /^log:(\d{1,15})$/.exec(Buffer.from(cursor, "base64url").toString());
  if (!match) {
    throw new InvalidRequestError(
      "pageCursor is not a nextCursor this API returned; start again without it (or with cursor, a time in ms)",
    );
  }
  return Number(match[1]);
}
