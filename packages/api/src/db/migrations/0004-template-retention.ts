/**
 * What is kept of templates over time. Superseded builds are retired: once a newer build of the
 * template is ready and no tag names them, their snapshot and layers are removed from the node;
 * the row (and its log) stays as history, marked with when that happened. Uploaded COPY files
 * record when a build last used them, so those unused for long can be removed.
 */
// biome-ignore-all lint/suspicious/noExplicitAny: migrations run against the schema of their own time, not today's types.
import type { Kysely } from "kysely";

export async function up(db: Kysely<any>): Promise<void> {
  await db.schema.alterTable("template_builds").addColumn("retired_at", "timestamptz").execute();
  await db.schema.alterTable("template_files").addColumn("last_used_at", "timestamptz").execute();
}

export async function down(db: Kysely<any>): Promise<void> {
  await db.schema.alterTable("template_files").dropColumn("last_used_at").execute();
  await db.schema.alterTable("template_builds").dropColumn("retired_at").execute();
}
