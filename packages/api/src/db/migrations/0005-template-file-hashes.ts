/**
 * What the API itself hashed of each uploaded COPY file: the SHA-256 of the tar as received.
 * Builds are cached by it (never by the hash the client claims), and nodes check their download
 * against it. Files uploaded before it have none and read as not uploaded (the SDK uploads them
 * again).
 */
// biome-ignore-all lint/suspicious/noExplicitAny: migrations run against the schema of their own time, not today's types.
import type { Kysely } from "kysely";

export async function up(db: Kysely<any>): Promise<void> {
  await db.schema.alterTable("template_files").addColumn("content_sha256", "text").execute();
}

export async function down(db: Kysely<any>): Promise<void> {
  await db.schema.alterTable("template_files").dropColumn("content_sha256").execute();
}
