/**
 * Opens the API's database and brings its schema up to date: PGlite under the data directory by
 * default (nothing else to run), PostgreSQL when a `postgres://` URL is configured. Both run the same
 * Kysely migrations and the same queries.
 */
import { mkdir } from "node:fs/promises";
import { PGlite } from "@electric-sql/pglite";
import type { Logger } from "@moat/shared";
import { Kysely, type MigrationProvider, Migrator, PostgresDialect } from "kysely";
import pg from "pg";
import type { DatabaseConfig } from "../config.js";
import { migrations } from "./migrations/index.js";
import { PGliteDialect } from "./pglite-dialect.js";
import type { Database } from "./schema.js";

export type DB = Kysely<Database>;

export class MigrationError extends Error {
  constructor(migration: string | undefined, cause: unknown) {
    super(`database migration ${migration ?? "(setup)"} failed: ${describe(cause)}`, { cause });
    this.name = "MigrationError";
  }
}

export async function openDatabase(config: DatabaseConfig, logger: Logger): Promise<DB> {
  const db = new Kysely<Database>({ dialect: await dialect(config) });
  try {
    await migrate(db, logger);
  } catch (err) {
    await db.destroy().catch(() => undefined);
    throw err;
  }
  return db;
}

async function dialect(config: DatabaseConfig) {
  switch (config.kind) {
    case "pglite": {
      await mkdir(config.dir, { recursive: true });
      return new PGliteDialect(await PGlite.create(config.dir));
    }
    case "pglite-memory":
      return new PGliteDialect(await PGlite.create());
    case "postgres":
      return new PostgresDialect({ pool: new pg.Pool({ connectionString: config.url, max: 10 }) });
  }
}

const provider: MigrationProvider = { getMigrations: async () => migrations };

export async function migrate(db: DB, logger: Logger): Promise<void> {
  const migrator = new Migrator({
    db,
    provider,
    migrationTableName: "moat_migrations",
    migrationLockTableName: "moat_migrations_lock",
  });
  const { error, results } = await migrator.migrateToLatest();
  for (const result of results ?? []) {
    if (result.status === "Success") logger.info({ migration: result.migrationName }, "database migrated");
  }
  if (error) {
    const failed = results?.find((r) => r.status === "Error")?.migrationName;
    throw new MigrationError(failed, error);
  }
}

function describe(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
