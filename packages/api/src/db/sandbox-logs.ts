/** Typed queries on a sandbox's lifecycle log (what GET /sandboxes/{id}/logs serves). */
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

/** The team's log of one sandbox from `start` on (inclusive), oldest first. */
export async function listSandboxLogs(
  db: DB,
  query: { teamID: string; sandboxID: string; start?: Date; limit: number },
): Promise<SandboxLogRow[]> {
  let q = db
    .selectFrom("sandbox_logs")
    .selectAll()
    .where("sandbox_id", "=", query.sandboxID)
    .where("team_id", "=", query.teamID);
  if (query.start) q = q.where("timestamp", ">=", query.start);
  return q.orderBy("timestamp", "asc").orderBy("log_id", "asc").limit(query.limit).execute();
}
