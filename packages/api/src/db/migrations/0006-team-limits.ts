/**
 * Per-team quotas: `teams.limits` holds a team's overrides of the operator's defaults (an empty
 * object: the defaults), replacing `max_timeout_seconds` (a value other than the old fixed default
 * becomes an override). Paused sandboxes record when they were paused, for their retention;
 * those paused before this migration count from now.
 */
// biome-ignore-all lint/suspicious/noExplicitAny: migrations run against the schema of their own time, not today's types.
import { type Kysely, sql } from "kysely";

export async function up(db: Kysely<any>): Promise<void> {
  await db.schema
    .alterTable("teams")
    .addColumn("limits", "jsonb", (c) => c.notNull().defaultTo(sql`'{}'::jsonb`))
    .execute();
  await sql`update teams set limits = jsonb_build_object('maxTimeoutSeconds', max_timeout_seconds)
    where max_timeout_seconds <> 86400`.execute(db);
  await db.schema.alterTable("teams").dropColumn("max_timeout_seconds").execute();

  await db.schema.alterTable("sandboxes").addColumn("paused_at", "timestamptz").execute();
  await sql`update sandboxes set paused_at = now() where state in ('paused', 'pausing', 'resuming')`.execute(
    db,
  );
  // The retention sweep: the few paused sandboxes, oldest first.
  await db.schema
    .createIndex("sandboxes_paused_at")
    .on("sandboxes")
    .column("paused_at")
    .where(sql.ref("state"), "=", "paused")
    .execute();
}

export async function down(db: Kysely<any>): Promise<void> {
  await db.schema.dropIndex("sandboxes_paused_at").execute();
  await db.schema.alterTable("sandboxes").dropColumn("paused_at").execute();
  await db.schema
    .alterTable("teams")
    .addColumn("max_timeout_seconds", "integer", (c) => c.notNull().defaultTo(86_400))
    .execute();
  await sql`update teams set max_timeout_seconds = (limits->>'maxTimeoutSeconds')::integer
    where limits ? 'maxTimeoutSeconds'`.execute(db);
  await db.schema.alterTable("teams").dropColumn("limits").execute();
}
