/** Typed queries on the files teams uploaded for COPY steps (the files live on disk). */
import { sql } from "kysely";
import type { DB } from "./database.js";

export interface TemplateFile {
  teamID: string;
  hash: string;
  size: number;
  /** Relative to the data directory. */
  path: string;
  /** SHA-256 of the tar as received; null for files uploaded before the API recorded it. */
  contentSHA256: string | null;
}

function fromRow(row: {
  team_id: string;
  hash: string;
  size: string | number | bigint;
  path: string;
  content_sha256: string | null;
}): TemplateFile {
  return {
    teamID: row.team_id,
    hash: row.hash,
    size: Number(row.size),
    path: row.path,
    contentSHA256: row.content_sha256,
  };
}

export async function getTemplateFile(
  db: DB,
  teamID: string,
  hash: string,
): Promise<TemplateFile | undefined> {
  const row = await db
    .selectFrom("template_files")
    .selectAll()
    .where("team_id", "=", teamID)
    .where("hash", "=", hash)
    .executeTakeFirst();
  return row && fromRow(row);
}

/** Records an upload; a second upload of the same hash replaces the first. */
export async function upsertTemplateFile(db: DB, file: TemplateFile): Promise<void> {
  const now = new Date();
  await db
    .insertInto("template_files")
    .values({
      team_id: file.teamID,
      hash: file.hash,
      size: file.size,
      path: file.path,
      content_sha256: file.contentSHA256,
      created_at: now,
      last_used_at: now,
    })
    .onConflict((oc) =>
      oc.columns(["team_id", "hash"]).doUpdateSet({
        size: file.size,
        path: file.path,
        content_sha256: file.contentSHA256,
        created_at: now,
        last_used_at: now,
      }),
    )
    .execute();
}

/** Which of `hashes` the team uploaded. */
export async function uploadedHashes(
  db: DB,
  teamID: string,
  hashes: readonly string[],
): Promise<Set<string>> {
  if (hashes.length === 0) return new Set();
  const rows = await db
    .selectFrom("template_files")
    .select("hash")
    .where("team_id", "=", teamID)
    .where("hash", "in", hashes)
    .execute();
  return new Set(rows.map((r) => r.hash));
}

/** Records that a build is about to use the file (it is then kept for the retention period). */
export async function touchTemplateFile(db: DB, teamID: string, hash: string): Promise<void> {
  await db
    .updateTable("template_files")
    .set({ last_used_at: new Date() })
    .where("team_id", "=", teamID)
    .where("hash", "=", hash)
    .execute();
}

/** Files no build used since `unusedSince`, oldest first. */
export async function listUnusedTemplateFiles(
  db: DB,
  unusedSince: Date,
  limit: number,
): Promise<TemplateFile[]> {
  const rows = await db
    .selectFrom("template_files")
    .selectAll()
    .where(sql<Date>`coalesce(last_used_at, created_at)`, "<", unusedSince)
    .orderBy(sql`coalesce(last_used_at, created_at)`)
    .limit(limit)
    .execute();
  return rows.map(fromRow);
}

/** Forgets a file if it is still unused since `unusedSince`; false when a use came in between. */
export async function deleteUnusedTemplateFile(
  db: DB,
  file: Pick<TemplateFile, "teamID" | "hash">,
  unusedSince: Date,
): Promise<boolean> {
  const row = await db
    .deleteFrom("template_files")
    .where("team_id", "=", file.teamID)
    .where("hash", "=", file.hash)
    .where(sql<Date>`coalesce(last_used_at, created_at)`, "<", unusedSince)
    .returning("hash")
    .executeTakeFirst();
  return row !== undefined;
}

/** Bytes the team's uploaded files take, but for the file of `except` (one being replaced). */
export async function storedFileBytes(db: DB, teamID: string, except?: string): Promise<number> {
  let query = db
    .selectFrom("template_files")
    .select(sql<string>`coalesce(sum(size), 0)`.as("bytes"))
    .where("team_id", "=", teamID);
  if (except !== undefined) query = query.where("hash", "!=", except);
  const row = await query.executeTakeFirstOrThrow();
  return Number(row.bytes);
}
