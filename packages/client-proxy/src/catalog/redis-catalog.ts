/**
 * The routing catalog of a fleet, read from Redis (the keys are in @moat/shared catalog.ts): every
 * API process writes an entry on each state change of a sandbox and publishes its id on
 * `moat:catalog`. This proxy keeps the entries it read in memory and drops one when its id is
 * published, so a cached entry is at most as old as the last message; a short TTL bounds the rest
 * (a message lost in a network blip). While the subscription is down nothing is cached (every
 * lookup reads Redis), and when it is back the cache is dropped, since messages were missed.
 *
 * Redis down: lookups fail at once with CatalogUnavailableError (503, "try again"), never queue;
 * the client reconnects by itself. Auto-resume asks the API (`POST /internal/sandboxes/{id}/resume`
 * with the node token), which resumes the sandbox and answers its new entry.
 */
import {
  type CatalogEntry,
  createLogger,
  type Logger,
  parseCatalogEntry,
  REDIS_CATALOG_CHANNEL,
  REDIS_SANDBOX_KEY_PREFIX,
  REDIS_TOKENS_KEY,
  type SandboxCatalog,
} from "@moat/shared";
import { Redis } from "ioredis";
import { CatalogUnavailableError } from "../errors.js";

export interface RedisCatalogOptions {
  /** `redis://[user:password@]host:port[/db]` (or `rediss://`). */
  redisURL: string;
  /** The API's base URL, for auto-resume; unset: paused sandboxes are not resumed by traffic. */
  apiURL?: string;
  /** The node token the API's resume route requires. */
  nodeToken?: string;
  logger?: Logger;
  /** How long an entry is served from memory without a message about it. Default 5 s. */
  ttlMs?: number;
  /** How long "no such sandbox" is remembered. Default 1 s. */
  missTTLMs?: number;
  /** How often, at most, a signed URL matching no known token reads all tokens again. Default 1 s. */
  tokenRefreshMs?: number;
  /** Most entries kept; the oldest go first. Default 100 000. */
  maxEntries?: number;
  /** How long an auto-resume may take at the API. Default 120 s. */
  resumeTimeoutMs?: number;
  /** How long `open` waits for the first connection before it serves anyway. Default 2 s. */
  connectWaitMs?: number;
}

interface Cached {
  entry: CatalogEntry | undefined;
  expires: number;
}

/** Redis's own errors come often while it is down: one log line per this many ms. */
const ERROR_LOG_INTERVAL_MS = 10_000;

export class RedisCatalog implements SandboxCatalog {
  readonly #redis: Redis;
  readonly #sub: Redis;
  readonly #log: Logger;
  readonly #cache = new Map<string, Cached>();
  readonly #ttlMs: number;
  readonly #missTTLMs: number;
  readonly #maxEntries: number;
  readonly #tokenRefreshMs: number;
  /** Bumped by every message and subscription change: a read that began before it is not cached. */
  #epoch = 0;
  /** Whether change messages are arriving, so that cached entries can be trusted. */
  #subscribed = false;
  #tokens = new Map<string, string>();
  #tokensReadAt = Number.NEGATIVE_INFINITY;
  #tokensReading: Promise<void> | undefined;
  #lastErrorLog = Number.NEGATIVE_INFINITY;
  #closed = false;
  /** Auto-resume through the API; absent without `apiURL`. */
  readonly resume?: (sandboxID: string) => Promise<CatalogEntry | undefined>;

  private constructor(options: RedisCatalogOptions) {
    this.#log = options.logger ?? createLogger("client-proxy");
    this.#ttlMs = options.ttlMs ?? 5_000;
    this.#missTTLMs = options.missTTLMs ?? 1_000;
    this.#maxEntries = options.maxEntries ?? 100_000;
    this.#tokenRefreshMs = options.tokenRefreshMs ?? 1_000;
    const connection = {
      // Fail at once while disconnected: a request must not wait for Redis to come back.
      enableOfflineQueue: false,
      maxRetriesPerRequest: 1,
      connectTimeout: 2_000,
      retryStrategy: (attempt: number) => Math.min(attempt * 200, 2_000),
    };
    this.#redis = new Redis(options.redisURL, connection);
    // The subscription is made by hand on every connect, so the cache is dropped exactly when
    // messages flow again.
    this.#sub = new Redis(options.redisURL, { ...connection, autoResubscribe: false });
    this.#redis.on("error", (err) => this.#logError(err));
    this.#sub.on("error", (err) => this.#logError(err));
    this.#sub.on("ready", () => void this.#subscribe());
    this.#sub.on("close", () => {
      if (this.#subscribed)
        this.#log.warn("lost the routing catalog's change messages; reading Redis uncached");
      this.#subscribed = false;
      this.#cache.clear();
      this.#epoch++;
    });
    this.#sub.on("message", (_channel: string, sandboxID: string) => this.#changed(sandboxID));
    const { apiURL, nodeToken } = options;
    if (apiURL) {
      if (!nodeToken) throw new Error("auto-resume through the API needs the node token");
      const base = apiURL.replace(/\/+$/, "");
      const timeoutMs = options.resumeTimeoutMs ?? 120_000;
      this.resume = (sandboxID) => this.#resume(base, nodeToken, sandboxID, timeoutMs);
    }
  }

  /** Connects (waiting a moment for Redis; a Redis that is down is retried in the background). */
  static async open(options: RedisCatalogOptions): Promise<RedisCatalog> {
    const catalog = new RedisCatalog(options);
    await catalog.#waitReady(options.connectWaitMs ?? 2_000);
    return catalog;
  }

  async lookup(sandboxID: string): Promise<CatalogEntry | undefined> {
    const cached = this.#subscribed ? this.#cache.get(sandboxID) : undefined;
    if (cached && cached.expires > Date.now()) return cached.entry;
    const epoch = this.#epoch;
    const text = await this.#command(() => this.#redis.get(REDIS_SANDBOX_KEY_PREFIX + sandboxID));
    let entry: CatalogEntry | undefined;
    if (text !== null) {
      try {
        entry = parseCatalogEntry(text);
      } catch {
        throw new Error(`the routing catalog's entry for ${sandboxID} is not a catalog entry`);
      }
    }
    if (this.#subscribed && epoch === this.#epoch) this.#remember(sandboxID, entry);
    return entry;
  }

  async findByAccessToken(verifies: (envdAccessToken: string) => boolean): Promise<CatalogEntry | undefined> {
    let sandboxID = this.#matchToken(verifies);
    if (sandboxID === undefined && Date.now() - this.#tokensReadAt >= this.#tokenRefreshMs) {
      this.#tokensReading ??= this.#readTokens().finally(() => {
        this.#tokensReading = undefined;
      });
      await this.#tokensReading;
      sandboxID = this.#matchToken(verifies);
    }
    return sandboxID === undefined ? undefined : this.lookup(sandboxID);
  }

  /** Whether entries are being served from memory (the change messages arrive). */
  get subscribed(): boolean {
    return this.#subscribed;
  }

  /** Entries held in memory (tests). */
  get cachedEntries(): number {
    return this.#cache.size;
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    this.#redis.disconnect();
    this.#sub.disconnect();
  }

  async #subscribe(): Promise<void> {
    try {
      await this.#sub.subscribe(REDIS_CATALOG_CHANNEL);
    } catch (err) {
      this.#logError(err as Error);
      return;
    }
    // Messages were missed while unsubscribed: nothing held from before can be trusted.
    this.#cache.clear();
    this.#tokensReadAt = Number.NEGATIVE_INFINITY;
    this.#epoch++;
    this.#subscribed = true;
  }

  #changed(sandboxID: string): void {
    this.#cache.delete(sandboxID);
    this.#epoch++;
    // Keeps the tokens exact without reading them all: one field per change.
    if (this.#tokensReadAt === Number.NEGATIVE_INFINITY) return;
    this.#redis.hget(REDIS_TOKENS_KEY, sandboxID).then(
      (token) => {
        if (token) this.#tokens.set(sandboxID, token);
        else this.#tokens.delete(sandboxID);
      },
      // Read again in full at the next miss.
      () => {
        this.#tokensReadAt = Number.NEGATIVE_INFINITY;
      },
    );
  }

  #remember(sandboxID: string, entry: CatalogEntry | undefined): void {
    this.#cache.delete(sandboxID);
    if (this.#cache.size >= this.#maxEntries) {
      const oldest = this.#cache.keys().next().value;
      if (oldest !== undefined) this.#cache.delete(oldest);
    }
    this.#cache.set(sandboxID, { entry, expires: Date.now() + (entry ? this.#ttlMs : this.#missTTLMs) });
  }

  #matchToken(verifies: (envdAccessToken: string) => boolean): string | undefined {
    for (const [sandboxID, token] of this.#tokens) if (verifies(token)) return sandboxID;
    return undefined;
  }

  async #readTokens(): Promise<void> {
    this.#tokensReadAt = Date.now();
    const all = await this.#command(() => this.#redis.hgetall(REDIS_TOKENS_KEY));
    this.#tokens = new Map(Object.entries(all));
  }

  async #resume(
    base: string,
    nodeToken: string,
    sandboxID: string,
    timeoutMs: number,
  ): Promise<CatalogEntry | undefined> {
    const response = await fetch(`${base}/internal/sandboxes/${encodeURIComponent(sandboxID)}/resume`, {
      method: "POST",
      headers: { authorization: `Bearer ${nodeToken}` },
      signal: AbortSignal.timeout(timeoutMs),
    });
    const text = await response.text();
    if (response.status === 404 || response.status === 409) {
      this.#log.info(
        { sandboxID, status: response.status, answer: text.slice(0, 300) },
        "the API did not resume",
      );
      return undefined;
    }
    if (response.status !== 200) {
      throw new Error(`the API answered ${response.status} to the resume: ${text.slice(0, 300)}`);
    }
    const entry = parseCatalogEntry(text);
    this.#cache.delete(sandboxID);
    this.#epoch++;
    return entry;
  }

  /** Runs a command now, or fails with CatalogUnavailableError. */
  async #command<T>(run: () => Promise<T>): Promise<T> {
    if (this.#redis.status !== "ready") throw new CatalogUnavailableError(`Redis is ${this.#redis.status}`);
    try {
      return await run();
    } catch (err) {
      this.#logError(err as Error);
      throw new CatalogUnavailableError("a Redis command failed");
    }
  }

  async #waitReady(ms: number): Promise<void> {
    const deadline = Date.now() + ms;
    while (Date.now() < deadline && !(this.#redis.status === "ready" && this.#subscribed)) {
      await new Promise((r) => setTimeout(r, 20));
    }
    if (this.#redis.status !== "ready") {
      this.#log.warn("Redis is not reachable yet: requests get 503 until it is; retrying in the background");
    }
  }

  #logError(err: Error): void {
    if (this.#closed) return;
    const now = Date.now();
    if (now - this.#lastErrorLog < ERROR_LOG_INTERVAL_MS) return;
    this.#lastErrorLog = now;
    this.#log.warn({ err: err.message }, "routing catalog (Redis) error; retrying");
  }
}
