/**
 * Per-sandbox locks for the changes that must reach the node and the record in one order (end
 * time, network rules). One API process: KeyedLock in memory. Several on one PostgreSQL: the
 * KeyedLock first (one connection per key and process), then a session advisory lock on a hash
 * of the key, held on a connection of a small pool of its own (the work's queries use the main
 * pool, so a held lock never starves them), always released; a connection that dies releases its
 * locks with it.
 */
import { createHash } from "node:crypto";
import pg from "pg";
import { KeyedLock } from "./keyed-lock.js";

export interface SandboxLocks {
  run<T>(key: string, work: () => Promise<T>): Promise<T>;
  close(): Promise<void>;
}

/** One process alone: the locks live in its memory. */
export class MemoryLocks implements SandboxLocks {
  private readonly local = new KeyedLock();

  run<T>(key: string, work: () => Promise<T>): Promise<T> {
    return this.local.run(key, work);
  }

  async close(): Promise<void> {}
}

/** The first int4 of moat's advisory locks ('moat'), so that they never meet other users' keys. */
const LOCK_CLASS = 0x6d6f6174;
/** Connections held for locks at once, per process; more keys wait for one. */
const LOCK_CONNECTIONS = 10;
/** A lock not had by then fails the request rather than hanging it. */
const LOCK_TIMEOUT = "120s";

export class PostgresLocks implements SandboxLocks {
  private readonly local = new KeyedLock();
  private readonly pool: pg.Pool;
  private readonly prepared = new WeakSet<pg.PoolClient>();

  constructor(url: string) {
    // Connections stay open (a lock costs one round trip, not a login), set up once.
    this.pool = new pg.Pool({
      connectionString: url,
      max: LOCK_CONNECTIONS,
      idleTimeoutMillis: 0,
    });
    this.pool.on("error", () => undefined);
    this.pool.connect().then(
      (client) =>
        this.prepare(client).then(
          () => client.release(),
          () => client.release(true),
        ),
      () => undefined,
    );
  }

  run<T>(key: string, work: () => Promise<T>): Promise<T> {
    return this.local.run(key, async () => {
      const client = await this.pool.connect();
      const id = lockID(key);
      try {
        await this.prepare(client);
        await client.query("select pg_advisory_lock($1, $2)", [LOCK_CLASS, id]);
      } catch (err) {
        client.release(true);
        throw err;
      }
      try {
        return await work();
      } finally {
        // A connection whose unlock failed may still hold the lock: closed, not reused.
        const unlocked = await client.query("select pg_advisory_unlock($1, $2)", [LOCK_CLASS, id]).then(
          () => true,
          () => false,
        );
        client.release(unlocked ? undefined : true);
      }
    });
  }

  async close(): Promise<void> {
    await this.pool.end();
  }

  /** A lock not had in LOCK_TIMEOUT fails: set once per connection. */
  private async prepare(client: pg.PoolClient): Promise<void> {
    if (this.prepared.has(client)) return;
    await client.query(`set lock_timeout = '${LOCK_TIMEOUT}'`);
    this.prepared.add(client);
  }
}

/** The second int4: a hash of the key (two keys sharing one only wait for each other). */
export function lockID(key: string): number {
  return createHash("sha256").update(key).digest().readInt32BE(0);
}
