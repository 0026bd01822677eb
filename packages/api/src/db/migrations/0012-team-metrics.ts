/**
 * Team metrics (GET /teams/{teamID}/metrics) are computed from the team's sandboxes' lives: an
 * index on the team and the creation time finds those of a time range.
 */
// biome-ignore-all lint/suspicious/noExplicitAny: migrations run against the schema of their own time, not today's types.
import type { Kysely } from "kysely";

export async function up(db: Kysely<any>): Promise<void> {
  await db.schema
    .createIndex("sandboxes_team_created")
    .on("sandboxes")
    .columns(["team_id", "created_at"])
    .execute();
}

export async function down(db: Kysely<any>): Promise<void> {
  await db.schema.dropIndex("sandboxes_team_created").execute();
}
