/**
 * Paused sandboxes and volumes on any node. `sandboxes.artifact_generation`: the pause (its
 * generation) a node published to the shared artifact store, so that another node can resume the
 * sandbox when its own is gone; null: not published (only its node can resume it).
 * `volumes.artifact_generation`: how many times the volume moved between nodes through the store
 * (each move publishes its image under the next generation).
 */
// biome-ignore-all lint/suspicious/noExplicitAny: migrations run against the schema of their own time, not today's types.
import type { Kysely } from "kysely";

export async function up(db: Kysely<any>): Promise<void> {
  await db.schema.alterTable("sandboxes").addColumn("artifact_generation", "integer").execute();
  await db.schema
    .alterTable("volumes")
    .addColumn("artifact_generation", "integer", (c) => c.notNull().defaultTo(0))
    .execute();
}

export async function down(db: Kysely<any>): Promise<void> {
  await db.schema.alterTable("volumes").dropColumn("artifact_generation").execute();
  await db.schema.alterTable("sandboxes").dropColumn("artifact_generation").execute();
}
