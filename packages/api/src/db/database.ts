/**
 * Opens the API's database and brings its schema up to date: PGlite under the data directory by
 * default (nothing else to run), PostgreSQL when a `postgres://` URL is configured. Both run the same
 * Kysely migrations and the same queries.
 */
import { createHash, randomBytes } from "node:crypto";
import { readdir, readFile, rename, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { PGlite } from "@electric-sql/pglite";
import { type Logger, makePrivateDir, makeTreePrivate } from "@moat/shared";
import { Kysely, type MigrationProvider, Migrator, PostgresDialect, sql } from "kysely";
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
  if (config.kind === "pglite-memory") {
    const loadDataDir = await migratedMemoryImage(logger);
    // The pages already live in memory: a small buffer pool is enough, and the default 128MB one
    // costs each start about half a second of CPU.
    const startParams = [...PGlite.defaultStartParams, "-c", "shared_buffers=16MB"];
    return new Kysely<Database>({
      dialect: new PGliteDialect(await PGlite.create({ loadDataDir, startParams })),
    });
  }
  const db = new Kysely<Database>({ dialect: await dialect(config) });
  try {
    await migrate(db, logger);
  } catch (err) {
    await db.destroy().catch(() => undefined);
    throw err;
  }
  return db;
}

async function dialect(config: Exclude<DatabaseConfig, { kind: "pglite-memory" }>) {
  switch (config.kind) {
    case "pglite": {
      // Signing keys, API key hashes, access tokens, env vars: root only (existing files too).
      await makePrivateDir(config.dir);
      await makeTreePrivate(config.dir);
      return new PGliteDialect(await PGlite.create(config.dir));
    }
    case "postgres":
      return new PostgresDialect({ pool: new pg.Pool({ connectionString: config.url, max: 10 }) });
  }
}

/**
 * In-memory databases (tests, throwaway APIs) start from an image of a freshly migrated one, kept
 * in the temp directory under a name that hashes the migrations: PGlite's initdb costs seconds of
 * CPU, loading the image a third of that, and every test process opens such databases.
 */
let memoryImage: Promise<Blob> | undefined;

/**
 * The image as PGlite reads it (arrayBuffer, once per database): from bytes kept aside, since
 * Node 20 reads a Blob's 40MB through a stream, which costs each start a third of a second.
 */
class ImageBlob extends Blob {
  readonly #image: Uint8Array;
  constructor(image: Uint8Array) {
    super([image]);
    this.#image = image;
  }
  override async arrayBuffer(): Promise<ArrayBuffer> {
    return this.#image.slice().buffer as ArrayBuffer;
  }
}

function migratedMemoryImage(logger: Logger): Promise<Blob> {
  memoryImage ??= (async () => {
    // "checkpointed": images from before the checkpoint below are not reused.
    const hash = createHash("sha256").update("checkpointed\0");
    for (const [name, m] of Object.entries(migrations)) hash.update(`${name}\0${m.up}\0${m.down}\0`);
    const file = path.join(tmpdir(), `moat-pglite-${hash.digest("hex").slice(0, 16)}.tar`);
    const cached = await readFile(file).catch(() => undefined);
    if (cached) return new ImageBlob(cached);
    const pglite = await PGlite.create();
    const db = new Kysely<Database>({ dialect: new PGliteDialect(pglite) });
    let image: Uint8Array;
    try {
      await migrate(db, logger);
      // Checkpointed, so that each database started from the image skips crash recovery.
      await pglite.exec("checkpoint");
      image = new Uint8Array(await (await pglite.dumpDataDir("none")).arrayBuffer());
    } finally {
      await db.destroy();
    }
    // Written aside and renamed: concurrent processes never read half an image.
    const temporary = `${file}.${randomBytes(4).toString("hex")}`;
    await writeFile(temporary, image);
    await rename(temporary, file).catch(() => rm(temporary, { force: true }));
    // Images of older migrations are of no further use.
    for (const name of await readdir(tmpdir()).catch(() => [] as string[])) {
      if (/^moat-pglite-[0-9a-f]{16}\.tar$/.test(name) && name !== path.basename(file)) {
        await rm(path.join(tmpdir(), name), { force: true });
      }
    }
    return new ImageBlob(image);
  })();
  memoryImage.catch(() => {
    memoryImage = undefined;
  });
  return memoryImage;
}

const provider: MigrationProvider = { getMigrations: async () => migrations };

export async function migrate(db: DB, logger: Logger): Promise<void> {
  // Named, since Kysely otherwise takes a migration table in any schema of the database (another
  // deployment's, or another test's) for this one's and leaves this schema without one.
  const schema = await sql<{ schema: string | null }>`select current_schema() as schema`
    .execute(db)
    .then((r) => r.rows[0]?.schema ?? undefined)
    .catch((err: unknown) => {
      throw new MigrationError(undefined, err);
    });
  const migrator = new Migrator({
    db,
    provider,
    migrationTableName: "moat_migrations",
    migrationLockTableName: "moat_migrations_lock",
    migrationTableSchema: schema,
  });
  const { error, results } = await migrator.migrateToLatest();
  // One line for the lot (a fresh database applies every migration): each one at debug.
  const applied = (results ?? []).filter((r) => r.status === "Success").map((r) => r.migrationName);
  for (const migration of applied) logger.debug({ migration }, "database migration applied");
  if (applied.length > 0)
    logger.info({ migrations: applied.length, latest: applied.at(-1) }, "database migrated");
  if (error) {
    const failed = results?.find((r) => r.status === "Error")?.migrationName;
    throw new MigrationError(failed, error);
  }
}

function describe(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
