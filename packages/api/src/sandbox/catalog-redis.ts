/**
 * The routing catalog's copy in Redis, for client proxies in other processes (a fleet). Redis is a
 * cache of PostgreSQL: APICatalog calls `write` on every change it records, and the whole catalog
 * is written again at start, every minute and whenever the connection comes back, so a Redis that
 * was restarted empty or missed writes is refilled. Keys (@moat/shared catalog.ts): the entry at
 * `moat:sandbox:<id>`, the envd access token in the hash `moat:tokens`, and the id published on
 * `moat:catalog` so that proxies drop what they cached.
 *
 * Writes go out in the order of the changes (one connection, one MULTI each) and never wait:
 * while Redis is down they fail at once, are logged, and the resync after the reconnect repairs
 * them. The API keeps serving throughout.
 */
import {
  type CatalogEntry,
  type Logger,
  REDIS_CATALOG_CHANNEL,
  REDIS_SANDBOX_KEY_PREFIX,
  REDIS_TOKENS_KEY,
} from "@moat/shared";
import { Redis } from "ioredis";

/** What one sandbox puts in Redis; `entry` undefined: it is gone. */
export interface RedisCatalogRecord {
  sandboxID: string;
  entry: CatalogEntry | undefined;
  /** Its envd access token, while a signed URL may reach it. */
  token: string | undefined;
}

export interface RedisCatalogWriterOptions {
  redisURL: string;
  logger: Logger;
  /** Every live sandbox's record, read from the database (the resync). */
  readAll(): Promise<RedisCatalogRecord[]>;
  /** How often the whole catalog is written again. Default 60 s. */
  resyncIntervalMs?: number;
}

const ERROR_LOG_INTERVAL_MS = 10_000;

export class RedisCatalogWriter {
  readonly #redis: Redis;
  readonly #log: Logger;
  readonly #readAll: () => Promise<RedisCatalogRecord[]>;
  readonly #timer: NodeJS.Timeout;
  /** Sandboxes changed while a resync reads the database: their own write wins over the resync's. */
  #changedDuringResync: Set<string> | undefined;
  #resyncing: Promise<void> | undefined;
  #lastErrorLog = Number.NEGATIVE_INFINITY;
  #closed = false;

  constructor(options: RedisCatalogWriterOptions) {
    this.#log = options.logger;
    this.#readAll = options.readAll;
    this.#redis = new Redis(options.redisURL, {
      enableOfflineQueue: false,
      maxRetriesPerRequest: 1,
      connectTimeout: 2_000,
      retryStrategy: (attempt: number) => Math.min(attempt * 200, 2_000),
    });
    this.#redis.on("error", (err: Error) => this.#logError(err, "Redis connection error; retrying"));
    let connectedBefore = false;
    this.#redis.on("ready", () => {
      // The first connection's resync is `start`'s; a reconnect may follow writes that failed.
      if (connectedBefore) void this.resync();
      connectedBefore = true;
    });
    this.#timer = setInterval(() => void this.resync(), options.resyncIntervalMs ?? 60_000);
    this.#timer.unref();
  }

  /** Waits a moment for Redis and writes the whole catalog; a Redis that is down is filled when it comes. */
  async start(connectWaitMs = 2_000): Promise<void> {
    const deadline = Date.now() + connectWaitMs;
    while (this.#redis.status !== "ready" && Date.now() < deadline)
      await new Promise((r) => setTimeout(r, 20));
    if (this.#redis.status !== "ready") {
      this.#log.warn("Redis is not reachable: the routing catalog is written there once it is");
      return;
    }
    await this.resync();
  }

  /** Writes one sandbox's change (in order with the others; never throws). */
  write(record: RedisCatalogRecord): void {
    this.#changedDuringResync?.add(record.sandboxID);
    if (this.#redis.status !== "ready") return;
    const multi = this.#redis.multi();
    addRecord(multi, record);
    multi.publish(REDIS_CATALOG_CHANNEL, record.sandboxID);
    multi.exec().catch((err: Error) => this.#logError(err, "could not write the routing catalog to Redis"));
  }

  /** Writes every live sandbox and removes the entries and tokens of the others. */
  resync(): Promise<void> {
    this.#resyncing ??= this.#resync()
      .catch((err: Error) => this.#logError(err, "could not resync the routing catalog to Redis"))
      .finally(() => {
        this.#resyncing = undefined;
      });
    return this.#resyncing;
  }

  async close(): Promise<void> {
    this.#closed = true;
    clearInterval(this.#timer);
    await this.#resyncing;
    this.#redis.disconnect();
  }

  async #resync(): Promise<void> {
    if (this.#redis.status !== "ready" || this.#closed) return;
    const changed = new Set<string>();
    this.#changedDuringResync = changed;
    let records: RedisCatalogRecord[];
    let keys: string[];
    let tokenFields: string[];
    try {
      records = await this.#readAll();
      [keys, tokenFields] = await Promise.all([this.#scanKeys(), this.#redis.hkeys(REDIS_TOKENS_KEY)]);
    } finally {
      // Writes from here on are queued after this resync's MULTI on the same connection.
      this.#changedDuringResync = undefined;
    }
    const live = new Set(records.map((r) => r.sandboxID));
    const gone = new Set<string>();
    for (const key of keys) gone.add(key.slice(REDIS_SANDBOX_KEY_PREFIX.length));
    for (const id of tokenFields) gone.add(id);
    for (const id of live) gone.delete(id);
    const multi = this.#redis.multi();
    /** Each SET's place among the MULTI's replies (the value it replaced), and what it wrote. */
    const written: Array<{ sandboxID: string; json: string; reply: number }> = [];
    let queued = 0;
    for (const record of records) {
      if (changed.has(record.sandboxID)) continue;
      if (record.entry) {
        const json = JSON.stringify(record.entry);
        multi.set(REDIS_SANDBOX_KEY_PREFIX + record.sandboxID, json, "GET");
        written.push({ sandboxID: record.sandboxID, json, reply: queued });
      } else multi.del(REDIS_SANDBOX_KEY_PREFIX + record.sandboxID);
      if (record.token) multi.hset(REDIS_TOKENS_KEY, record.sandboxID, record.token);
      else multi.hdel(REDIS_TOKENS_KEY, record.sandboxID);
      queued += 2;
    }
    const removed = [...gone].filter((sandboxID) => !changed.has(sandboxID));
    for (const sandboxID of removed) {
      addRecord(multi, { sandboxID, entry: undefined, token: undefined });
      multi.publish(REDIS_CATALOG_CHANNEL, sandboxID);
    }
    const replies = (await multi.exec()) ?? [];
    // Proxies drop what they cached of the entries this resync changed: a write was lost there.
    const stale = written.filter(({ json, reply }) => replies[reply]?.[1] !== json);
    if (stale.length > 0) {
      const publish = this.#redis.pipeline();
      for (const { sandboxID } of stale) publish.publish(REDIS_CATALOG_CHANNEL, sandboxID);
      await publish.exec();
    }
    this.#log.debug(
      { sandboxes: live.size, removed: removed.length, repaired: stale.length },
      "routing catalog resynced to Redis",
    );
  }

  async #scanKeys(): Promise<string[]> {
    const keys: string[] = [];
    let cursor = "0";
    do {
      const [next, batch] = await this.#redis.scan(
        cursor,
        "MATCH",
        `${REDIS_SANDBOX_KEY_PREFIX}*`,
        "COUNT",
        1000,
      );
      cursor = next;
      keys.push(...batch);
    } while (cursor !== "0");
    return keys;
  }

  #logError(err: Error, message: string): void {
    if (this.#closed) return;
    const now = Date.now();
    if (now - this.#lastErrorLog < ERROR_LOG_INTERVAL_MS) return;
    this.#lastErrorLog = now;
    this.#log.warn({ err: err.message }, message);
  }
}

function addRecord(multi: ReturnType<Redis["multi"]>, { sandboxID, entry, token }: RedisCatalogRecord): void {
  const key = REDIS_SANDBOX_KEY_PREFIX + sandboxID;
  if (entry) multi.set(key, JSON.stringify(entry));
  else multi.del(key);
  if (token) multi.hset(REDIS_TOKENS_KEY, sandboxID, token);
  else multi.hdel(REDIS_TOKENS_KEY, sandboxID);
}
