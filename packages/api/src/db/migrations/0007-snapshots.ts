/**
 * Snapshots of sandboxes, kept as E2B keeps them: a template (marked `snapshot`) whose builds are
 * each one snapshot, taken on the node of the sandbox it came from (`source_sandbox_id`). Creates
 * resolve them by id, name or `team/name:tag` like any template, and DELETE /templates/{id}
 * removes them.
 */
// biome-ignore-all lint/suspicious/noExplicitAny: migrations run against the schema of their own time, not today's types.
import type { Kysely } from "kysely";

export async function up(db: Kysely<any>): Promise<void> {
  await db.schema
    .alterTable("templates")
    .addColumn("snapshot", "boolean", (c) => c.notNull().defaultTo(false))
    .execute();
  await db.schema.alterTable("template_builds").addColumn("source_sandbox_id", "text").execute();
  // GET /snapshots?sandboxID=…: the snapshots of one sandbox.
  await db.schema
    .createIndex("template_builds_source_sandbox")
    .on("template_builds")
    .column("source_sandbox_id")
    .execute();
}

export async function down(db: Kysely<any>): Promise<void> {
  await db.schema.dropIndex("template_builds_source_sandbox").execute();
  await db.schema.alterTable("template_builds").dropColumn("source_sandbox_id").execute();
  await db.schema.alterTable("templates").dropColumn("snapshot").execute();
}
