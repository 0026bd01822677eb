/**
 * API keys as E2B lists them: when each was last used (written at most once a minute per key, so
 * authenticating stays a read), and which key or access token created it (so that the keys a
 * leaked key made can be found and revoked with it).
 */
// biome-ignore-all lint/suspicious/noExplicitAny: migrations run against the schema of their own time, not today's types.
import type { Kysely } from "kysely";

export async function up(db: Kysely<any>): Promise<void> {
  await db.schema.alterTable("api_keys").addColumn("last_used_at", "timestamptz").execute();
  await db.schema.alterTable("api_keys").addColumn("created_by", "text").execute();
}

export async function down(db: Kysely<any>): Promise<void> {
  await db.schema.alterTable("api_keys").dropColumn("created_by").execute();
  await db.schema.alterTable("api_keys").dropColumn("last_used_at").execute();
}
