/** Typed queries on volumes; every query a team's request leads to is scoped by its team id. */
import { sql } from "kysely";
import type { DB } from "./database.js";
import type { VolumeRow, VolumeState, VolumesTable } from "./schema.js";

export async function insertVolume(
  db: DB,
  row: Omit<VolumesTable, "created_at" | "artifact_generation">,
): Promise<void> {
  await db.insertInto("volumes").values(row).execute();
}

/** Any volume by id (the content routes, which authenticate by the volume's own token). */
export async function getVolume(db: DB, volumeID: string): Promise<VolumeRow | undefined> {
  return db.selectFrom("volumes").selectAll().where("volume_id", "=", volumeID).executeTakeFirst();
}

/** The team's volume in one of `states`; another team's is as absent as a missing one. */
export async function getTeamVolume(
  db: DB,
  teamID: string,
  volumeID: string,
  states: readonly VolumeState[] = ["ready"],
): Promise<VolumeRow | undefined> {
  return db
    .selectFrom("volumes")
    .selectAll()
    .where("volume_id", "=", volumeID)
    .where("team_id", "=", teamID)
    .where("state", "in", states)
    .executeTakeFirst();
}

/** The team's ready volumes, oldest first. */
export async function listTeamVolumes(db: DB, teamID: string): Promise<VolumeRow[]> {
  return db
    .selectFrom("volumes")
    .selectAll()
    .where("team_id", "=", teamID)
    .where("state", "=", "ready")
    .orderBy("created_at")
    .orderBy("volume_id")
    .execute();
}

/** The team's volumes in any state (each holds its name and its room on a node). */
export async function countTeamVolumes(db: DB, teamID: string): Promise<number> {
  const row = await db
    .selectFrom("volumes")
    .select((eb) => eb.fn.countAll<string>().as("n"))
    .where("team_id", "=", teamID)
    .executeTakeFirstOrThrow();
  return Number(row.n);
}

/** The team's ready volumes of these names. */
export async function teamVolumesByName(db: DB, teamID: string, names: string[]): Promise<VolumeRow[]> {
  if (names.length === 0) return [];
  return db
    .selectFrom("volumes")
    .selectAll()
    .where("team_id", "=", teamID)
    .where("name", "in", names)
    .where("state", "=", "ready")
    .execute();
}

/** Moves the volume to `to` only while it is in one of `from` (a compare-and-set). */
export async function setVolumeState(
  db: DB,
  volumeID: string,
  from: readonly VolumeState[],
  to: VolumeState,
): Promise<boolean> {
  const result = await db
    .updateTable("volumes")
    .set({ state: to })
    .where("volume_id", "=", volumeID)
    .where("state", "in", from)
    .executeTakeFirst();
  return Number(result.numUpdatedRows) > 0;
}

export async function deleteVolumeRow(db: DB, volumeID: string): Promise<void> {
  await db.deleteFrom("volumes").where("volume_id", "=", volumeID).execute();
}

/** The team's sandboxes that mount the volume and are not gone (running, paused, or on the way). */
export async function sandboxesMounting(db: DB, teamID: string, volumeID: string): Promise<string[]> {
  const rows = await db
    .selectFrom("sandboxes")
    .select("sandbox_id")
    .where("team_id", "=", teamID)
    .where("state", "<>", "killed")
    .where(sql<boolean>`volume_mounts @> ${JSON.stringify([{ volumeID }])}::jsonb`)
    .orderBy("sandbox_id")
    .execute();
  return rows.map((r) => r.sandbox_id);
}
