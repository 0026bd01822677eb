/**
 * Volumes: a team's named persistent file systems, each living on one node (`node_id`), and the
 * volumes each sandbox mounts (`sandboxes.volume_mounts`: name, path and volume id), so that a
 * volume in use is never deleted and the mounts show in GET /sandboxes.
 */
// biome-ignore-all lint/suspicious/noExplicitAny: migrations run against the schema of their own time, not today's types.
import { type Kysely, sql } from "kysely";

export async function up(db: Kysely<any>): Promise<void> {
  await db.schema
    .createTable("volumes")
    .addColumn("volume_id", "text", (c) => c.primaryKey())
    .addColumn("team_id", "text", (c) => c.notNull().references("teams.team_id").onDelete("cascade"))
    .addColumn("name", "text", (c) => c.notNull())
    .addColumn("node_id", "text", (c) => c.notNull())
    .addColumn("size_mb", "integer", (c) => c.notNull())
    .addColumn("state", "text", (c) => c.notNull())
    .addColumn("created_at", "timestamptz", (c) => c.notNull().defaultTo(sql`now()`))
    .addUniqueConstraint("volumes_team_name", ["team_id", "name"])
    .execute();
  await db.schema.alterTable("sandboxes").addColumn("volume_mounts", "jsonb").execute();
}

export async function down(db: Kysely<any>): Promise<void> {
  await db.schema.alterTable("sandboxes").dropColumn("volume_mounts").execute();
  await db.schema.dropTable("volumes").execute();
}
