/** Typed queries on a sandbox's lifecycle log (what GET /sandboxes/{id}/logs serves). */
import { sql } from "kysely";
import type { DB } from "./database.js";
import type { SandboxLogRow, SandboxLogsTable } from "./schema.js";

export interface NewSandboxLog {
  sandboxID: string;
  teamID: string;
  level: SandboxLogsTable["level"];
  message: string;
  fields?: Record<string, string>;
  timestamp?: Date;
}

export async function insertSandboxLog(db: DB, log: NewSandboxLog): Promise<void> {
  await db
    .insertInto("sandbox_logs")
    .values({
      sandbox_id: log.sandboxID,
      team_id: log.teamID,
      timestamp: log.timestamp ?? new Date(),
      level: log.level,
      message: log.message,
      fields: JSON.stringify(log.fields ?? {}),
    })
    .execute();
}

/**
 * A page of the team's log of one sandbox: from `from` on (forward, oldest first) or up to it
 * (backward, newest first), inclusive, at `levels`, with `search` in the message (case-sensitive).
 */
export async function pageSandboxLogs(
  db: DB,
  query: {
    teamID: string;
    sandboxID: string;
    from?: Date;
    direction: "forward" | "backward";
    levels: readonly SandboxLogsTable["level"][];
    search?: string;
    limit: number;
  },
): Promise<SandboxLogRow[]> {
  const forward = query.direction === "forward";
  let q = db
    .selectFrom("sandbox_logs")
    .selectAll()
    .where("sandbox_id", "=", query.sandboxID)
    .where("team_id", "=", query.teamID)
    .where("level", "in", query.levels);
  if (query.from) q = q.where("timestamp", forward ? ">=" : "<=", query.from);
  // strpos, not LIKE: the search is a plain substring, its % and _ mean themselves.
  if (query.search) q = q.where(sql<boolean>`strpos(message, ${query.search}) > 0`);
  const order = forward ? "asc" : "desc";
  return q.orderBy("timestamp", order).orderBy("log_id", order).limit(query.limit).execute();
}
