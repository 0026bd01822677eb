/**
 * Custom templates: the templates a team builds (one name each, unique in the team), their builds
 * with the build log, the tags that name builds, the files the SDK uploaded for COPY steps, and
 * the keys that sign the URLs of those files.
 */
// biome-ignore-all lint/suspicious/noExplicitAny: migrations run against the schema of their own time, not today's types.
import { type Kysely, sql } from "kysely";

export async function up(db: Kysely<any>): Promise<void> {
  await db.schema
    .createTable("templates")
    .addColumn("template_id", "text", (c) => c.primaryKey())
    .addColumn("team_id", "text", (c) => c.notNull().references("teams.team_id").onDelete("cascade"))
    .addColumn("name", "text", (c) => c.notNull())
    .addColumn("public", "boolean", (c) => c.notNull().defaultTo(false))
    .addColumn("cpu_count", "integer", (c) => c.notNull())
    .addColumn("memory_mb", "integer", (c) => c.notNull())
    .addColumn("disk_size_mb", "integer", (c) => c.notNull().defaultTo(0))
    .addColumn("build_count", "integer", (c) => c.notNull().defaultTo(0))
    .addColumn("spawn_count", "integer", (c) => c.notNull().defaultTo(0))
    .addColumn("last_spawned_at", "timestamptz")
    .addColumn("created_at", "timestamptz", (c) => c.notNull().defaultTo(sql`now()`))
    .addColumn("updated_at", "timestamptz", (c) => c.notNull().defaultTo(sql`now()`))
    .addUniqueConstraint("templates_team_name", ["team_id", "name"])
    .execute();
  // Listing: a team's templates, newest first, with the id as tie-breaker (the cursor).
  await db.schema
    .createIndex("templates_team_created")
    .on("templates")
    .columns(["team_id", "created_at", "template_id"])
    .execute();

  await db.schema
    .createTable("template_builds")
    .addColumn("build_id", "uuid", (c) => c.primaryKey())
    .addColumn("template_id", "text", (c) =>
      c.notNull().references("templates.template_id").onDelete("cascade"),
    )
    .addColumn("status", "text", (c) => c.notNull())
    .addColumn("cpu_count", "integer", (c) => c.notNull())
    .addColumn("memory_mb", "integer", (c) => c.notNull())
    .addColumn("disk_size_mb", "integer", (c) => c.notNull().defaultTo(0))
    .addColumn("start_request", "jsonb")
    .addColumn("reason", "jsonb")
    .addColumn("envd_version", "text")
    .addColumn("default_user", "text")
    .addColumn("default_workdir", "text")
    .addColumn("node_id", "text")
    .addColumn("created_at", "timestamptz", (c) => c.notNull().defaultTo(sql`now()`))
    .addColumn("updated_at", "timestamptz", (c) => c.notNull().defaultTo(sql`now()`))
    .addColumn("started_at", "timestamptz")
    .addColumn("finished_at", "timestamptz")
    .addColumn("heartbeat_at", "timestamptz")
    .execute();
  await db.schema
    .createIndex("template_builds_template_created")
    .on("template_builds")
    .columns(["template_id", "created_at", "build_id"])
    .execute();
  // The sweep for builds whose API process stopped: the few that are not finished.
  await db.schema
    .createIndex("template_builds_unfinished")
    .on("template_builds")
    .column("heartbeat_at")
    .where(sql.ref("status"), "in", sql`('waiting', 'building')`)
    .execute();

  await db.schema
    .createTable("template_build_logs")
    .addColumn("build_id", "uuid", (c) =>
      c.notNull().references("template_builds.build_id").onDelete("cascade"),
    )
    .addColumn("ordinal", "integer", (c) => c.notNull())
    .addColumn("timestamp", "timestamptz", (c) => c.notNull())
    .addColumn("level", "text", (c) => c.notNull())
    .addColumn("message", "text", (c) => c.notNull())
    .addColumn("step", "text")
    .addPrimaryKeyConstraint("template_build_logs_pkey", ["build_id", "ordinal"])
    .execute();

  // A tag's history: each assignment is a row; the tag names the newest one whose build is ready.
  await db.schema
    .createTable("template_tags")
    .addColumn("template_id", "text", (c) =>
      c.notNull().references("templates.template_id").onDelete("cascade"),
    )
    .addColumn("tag", "text", (c) => c.notNull())
    .addColumn("build_id", "uuid", (c) =>
      c.notNull().references("template_builds.build_id").onDelete("cascade"),
    )
    .addColumn("created_at", "timestamptz", (c) => c.notNull().defaultTo(sql`now()`))
    .addPrimaryKeyConstraint("template_tags_pkey", ["template_id", "tag", "build_id"])
    .execute();
  await db.schema
    .createIndex("template_tags_template_tag_created")
    .on("template_tags")
    .columns(["template_id", "tag", "created_at"])
    .execute();

  await db.schema
    .createTable("template_files")
    .addColumn("team_id", "text", (c) => c.notNull().references("teams.team_id").onDelete("cascade"))
    .addColumn("hash", "text", (c) => c.notNull())
    .addColumn("size", "bigint", (c) => c.notNull())
    .addColumn("path", "text", (c) => c.notNull())
    .addColumn("created_at", "timestamptz", (c) => c.notNull().defaultTo(sql`now()`))
    .addPrimaryKeyConstraint("template_files_pkey", ["team_id", "hash"])
    .execute();

  await db.schema
    .createTable("signing_keys")
    .addColumn("name", "text", (c) => c.primaryKey())
    .addColumn("key", "text", (c) => c.notNull())
    .addColumn("created_at", "timestamptz", (c) => c.notNull().defaultTo(sql`now()`))
    .execute();
}

export async function down(db: Kysely<any>): Promise<void> {
  await db.schema.dropTable("signing_keys").execute();
  await db.schema.dropTable("template_files").execute();
  await db.schema.dropTable("template_tags").execute();
  await db.schema.dropTable("template_build_logs").execute();
  await db.schema.dropTable("template_builds").execute();
  await db.schema.dropTable("templates").execute();
}
