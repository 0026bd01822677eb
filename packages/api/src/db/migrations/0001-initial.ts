/**
 * Teams, their API keys and access tokens, sandboxes and their lifecycle log.
 */
// biome-ignore-all lint/suspicious/noExplicitAny: migrations run against the schema of their own time, not today's types.
import { type Kysely, sql } from "kysely";

export async function up(db: Kysely<any>): Promise<void> {
  await db.schema
    .createTable("teams")
    .addColumn("team_id", "text", (c) => c.primaryKey())
    .addColumn("name", "text", (c) => c.notNull())
    .addColumn("is_default", "boolean", (c) => c.notNull().defaultTo(false))
    .addColumn("max_timeout_seconds", "integer", (c) => c.notNull().defaultTo(86_400))
    .addColumn("created_at", "timestamptz", (c) => c.notNull().defaultTo(sql`now()`))
    .execute();
  await db.schema
    .createIndex("teams_one_default")
    .on("teams")
    .column("is_default")
    .unique()
    .where(sql.ref("is_default"), "=", true)
    .execute();

  await db.schema
    .createTable("access_tokens")
    .addColumn("access_token_id", "text", (c) => c.primaryKey())
    .addColumn("team_id", "text", (c) => c.notNull().references("teams.team_id").onDelete("cascade"))
    .addColumn("token_hash", "text", (c) => c.notNull().unique())
    .addColumn("token_mask", "text", (c) => c.notNull())
    .addColumn("name", "text", (c) => c.notNull())
    .addColumn("created_at", "timestamptz", (c) => c.notNull().defaultTo(sql`now()`))
    .execute();

  await db.schema
    .createTable("api_keys")
    .addColumn("api_key_id", "text", (c) => c.primaryKey())
    .addColumn("team_id", "text", (c) => c.notNull().references("teams.team_id").onDelete("cascade"))
    .addColumn("key_hash", "text", (c) => c.notNull().unique())
    .addColumn("key_mask", "text", (c) => c.notNull())
    .addColumn("name", "text", (c) => c.notNull())
    .addColumn("access_token_id", "text", (c) =>
      c.references("access_tokens.access_token_id").onDelete("cascade"),
    )
    .addColumn("created_at", "timestamptz", (c) => c.notNull().defaultTo(sql`now()`))
    .execute();

  await db.schema
    .createTable("sandboxes")
    .addColumn("sandbox_id", "text", (c) => c.primaryKey())
    .addColumn("team_id", "text", (c) => c.notNull().references("teams.team_id").onDelete("cascade"))
    .addColumn("template_id", "text", (c) => c.notNull())
    .addColumn("alias", "text")
    .addColumn("node_id", "text", (c) => c.notNull())
    .addColumn("state", "text", (c) => c.notNull())
    .addColumn("host_address", "text")
    .addColumn("envd_version", "text")
    .addColumn("envd_access_token", "text")
    .addColumn("traffic_access_token", "text")
    .addColumn("metadata", "jsonb", (c) => c.notNull().defaultTo(sql`'{}'::jsonb`))
    .addColumn("cpu_count", "integer", (c) => c.notNull())
    .addColumn("memory_mb", "integer", (c) => c.notNull())
    .addColumn("disk_size_mb", "integer", (c) => c.notNull())
    .addColumn("allow_internet_access", "boolean")
    .addColumn("network", "jsonb")
    .addColumn("auto_pause", "boolean", (c) => c.notNull().defaultTo(false))
    .addColumn("auto_resume", "boolean", (c) => c.notNull().defaultTo(false))
    .addColumn("started_at", "timestamptz", (c) => c.notNull())
    .addColumn("end_at", "timestamptz", (c) => c.notNull())
    .addColumn("stopped_at", "timestamptz")
    .addColumn("stop_reason", "text")
    .addColumn("created_at", "timestamptz", (c) => c.notNull().defaultTo(sql`now()`))
    .execute();
  // Listing: a team's sandboxes in one state, newest first, with the id as tie-breaker (the cursor).
  await db.schema
    .createIndex("sandboxes_team_state_started")
    .on("sandboxes")
    .columns(["team_id", "state", "started_at", "sandbox_id"])
    .execute();
  // Reconcile with a node: its sandboxes that are not yet killed.
  await db.schema.createIndex("sandboxes_node_state").on("sandboxes").columns(["node_id", "state"]).execute();

  await db.schema
    .createTable("sandbox_logs")
    .addColumn("log_id", "bigserial", (c) => c.primaryKey())
    .addColumn("sandbox_id", "text", (c) => c.notNull())
    .addColumn("team_id", "text", (c) => c.notNull().references("teams.team_id").onDelete("cascade"))
    .addColumn("timestamp", "timestamptz", (c) => c.notNull())
    .addColumn("level", "text", (c) => c.notNull())
    .addColumn("message", "text", (c) => c.notNull())
    .addColumn("fields", "jsonb", (c) => c.notNull().defaultTo(sql`'{}'::jsonb`))
    .execute();
  await db.schema
    .createIndex("sandbox_logs_sandbox_time")
    .on("sandbox_logs")
    .columns(["sandbox_id", "timestamp", "log_id"])
    .execute();
}

export async function down(db: Kysely<any>): Promise<void> {
  await db.schema.dropTable("sandbox_logs").execute();
  await db.schema.dropTable("sandboxes").execute();
  await db.schema.dropTable("api_keys").execute();
  await db.schema.dropTable("access_tokens").execute();
  await db.schema.dropTable("teams").execute();
}
