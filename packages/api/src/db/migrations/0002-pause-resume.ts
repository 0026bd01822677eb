/**
 * Pause and resume. The new states (pausing, paused, resuming) are values of the existing `state`
 * text column; what is new is the lifetime a sandbox was created with, which an auto-resume through
 * the client proxy grants it again. Rows from before this migration have none (null).
 */
// biome-ignore-all lint/suspicious/noExplicitAny: migrations run against the schema of their own time, not today's types.
import type { Kysely } from "kysely";

export async function up(db: Kysely<any>): Promise<void> {
  await db.schema.alterTable("sandboxes").addColumn("timeout_seconds", "integer").execute();
}

export async function down(db: Kysely<any>): Promise<void> {
  await db.schema.alterTable("sandboxes").dropColumn("timeout_seconds").execute();
}
