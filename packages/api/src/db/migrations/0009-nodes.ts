/**
 * A fleet of nodes: `nodes` holds what each registered node last reported in its heartbeat (where
 * to reach it, its capacity, load and local template builds) and its status (ready, draining,
 * unhealthy); `api_instances` holds each API process's own heartbeat, and `sandboxes.api_instance_id`
 * the process that runs a sandbox's create, so that another process can close a create whose
 * process died.
 */
// biome-ignore-all lint/suspicious/noExplicitAny: migrations run against the schema of their own time, not today's types.
import { type Kysely, sql } from "kysely";

export async function up(db: Kysely<any>): Promise<void> {
  await db.schema
    .createTable("nodes")
    .addColumn("id", "text", (c) => c.primaryKey())
    .addColumn("rpc_url", "text", (c) => c.notNull())
    .addColumn("proxy_url", "text", (c) => c.notNull())
    .addColumn("version", "text", (c) => c.notNull())
    .addColumn("runtime", "text", (c) => c.notNull())
    .addColumn("labels", "jsonb", (c) => c.notNull())
    .addColumn("capacity", "jsonb", (c) => c.notNull())
    .addColumn("load", "jsonb", (c) => c.notNull())
    .addColumn("builds", "jsonb", (c) => c.notNull())
    .addColumn("status", "text", (c) => c.notNull())
    .addColumn("last_heartbeat", "timestamptz", (c) => c.notNull())
    .addColumn("first_seen", "timestamptz", (c) => c.notNull().defaultTo(sql`now()`))
    .execute();
  await db.schema
    .createTable("api_instances")
    .addColumn("id", "text", (c) => c.primaryKey())
    .addColumn("started_at", "timestamptz", (c) => c.notNull().defaultTo(sql`now()`))
    .addColumn("heartbeat_at", "timestamptz", (c) => c.notNull().defaultTo(sql`now()`))
    .execute();
  await db.schema.alterTable("sandboxes").addColumn("api_instance_id", "text").execute();
}

export async function down(db: Kysely<any>): Promise<void> {
  await db.schema.alterTable("sandboxes").dropColumn("api_instance_id").execute();
  await db.schema.dropTable("api_instances").execute();
  await db.schema.dropTable("nodes").execute();
}
