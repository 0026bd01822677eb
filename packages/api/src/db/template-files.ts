/** Typed queries on the files teams uploaded for COPY steps (the files live on disk). */
import type { DB } from "./database.js";

export interface TemplateFile {
  teamID: string;
  hash: string;
  size: number;
  /** Relative to the data directory. */
  path: string;
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
  return row && { teamID: row.team_id, hash: row.hash, size: Number(row.size), path: row.path };
}

/** Records an upload; a second upload of the same hash replaces the first. */
export async function upsertTemplateFile(db: DB, file: TemplateFile): Promise<void> {
  const now = new Date();
  await db
    .insertInto("template_files")
    .values({ team_id: file.teamID, hash: file.hash, size: file.size, path: file.path, created_at: now })
    .onConflict((oc) =>
      oc.columns(["team_id", "hash"]).doUpdateSet({ size: file.size, path: file.path, created_at: now }),
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
