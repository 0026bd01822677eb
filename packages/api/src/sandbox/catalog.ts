/**
 * The routing catalog the client proxy reads (`SandboxCatalog` in @moat/shared), backed by the
 * sandboxes table with an in-memory cache in front. Every state change the API makes or learns
 * from a node goes through `update`/`forget` here, so the cache of this process never serves a
 * killed sandbox; entries also expire, which bounds the staleness other API processes can cause.
 * A sandbox being paused reads as pausing and one being resumed as starting: the proxy holds
 * traffic for both until the outcome. `resume` is the proxy's auto-resume, run by the API (see
 * `autoResume` in ./resume.ts). Signed `/files` URLs name no sandbox: `findByAccessToken` finds the
 * one whose envd access token their signature covers, among the tokens of live secured sandboxes
 * (kept up to date by this process's changes, and read again from the database on a miss, at
 * most once per `tokenRefreshMs`, for sandboxes other API processes made).
 *
 * In a fleet every change also goes to Redis (catalog-redis.ts), where client proxies in other
 * processes read it; entries then name the sandbox's node and its node proxy.
 */
import type { CatalogEntry, SandboxCatalog } from "@moat/shared";
import type { DB } from "../db/database.js";
import { getSandbox, listAccessTokens } from "../db/sandboxes.js";
import type { SandboxRow } from "../db/schema.js";
import type { RedisCatalogRecord, RedisCatalogWriter } from "./catalog-redis.js";

export interface CatalogOptions {
  /** Resumes a paused sandbox for the proxy; without it the catalog cannot resume. */
  resume?: (sandboxID: string) => Promise<CatalogEntry | undefined>;
  /** How long a found entry is served from memory. */
  ttlMs?: number;
  /** How long "no such sandbox" is remembered (bounds the database reads of junk traffic). */
  missTTLMs?: number;
  /** Most entries kept; the oldest go first. */
  maxEntries?: number;
  /** How often, at most, a signed URL that matches no known token reads the tokens again. */
  tokenRefreshMs?: number;
  /** The proxy URL of a node (sandbox/nodes.ts `nodeProxyURL`); undefined: none. */
  nodeProxyURL?: (nodeID: string) => string | undefined;
}

interface Cached {
  entry: CatalogEntry | undefined;
  expires: number;
}

export class APICatalog implements SandboxCatalog {
  private readonly cache = new Map<string, Cached>();
  private readonly ttlMs: number;
  private readonly missTTLMs: number;
  private readonly maxEntries: number;
  private readonly resumer: CatalogOptions["resume"];
  private readonly tokenRefreshMs: number;
  /** Envd access tokens of live secured sandboxes, by sandbox id. */
  private tokens = new Map<string, string>();
  private tokensReadAt = Number.NEGATIVE_INFINITY;
  private tokensReading: Promise<void> | undefined;
  /** Sandboxes changed while the tokens are being read: their change wins over the read. */
  private changedDuringRead: Set<string> | undefined;
  private readonly proxyURLOf: (nodeID: string) => string | undefined;
  /** The copy in Redis, once `publishTo` is called (a fleet). */
  private redis: RedisCatalogWriter | undefined;

  constructor(
    private readonly db: DB,
    options: CatalogOptions = {},
  ) {
    this.resumer = options.resume;
    this.ttlMs = options.ttlMs ?? 30_000;
    this.missTTLMs = options.missTTLMs ?? 1_000;
    this.maxEntries = options.maxEntries ?? 100_000;
    this.tokenRefreshMs = options.tokenRefreshMs ?? 1_000;
    this.proxyURLOf = options.nodeProxyURL ?? (() => undefined);
  }

  /** From now on every change is also written to Redis. */
  publishTo(redis: RedisCatalogWriter): void {
    this.redis = redis;
  }

  /** The routing entry of a sandbox's record, naming its node proxy when the node has one. */
  entryOf(row: SandboxRow): CatalogEntry | undefined {
    return catalogEntry(row, this.proxyURLOf(row.node_id));
  }

  /** What Redis holds for a sandbox's record (the full resync reads every live one). */
  redisRecord(sandboxID: string, row: SandboxRow | undefined): RedisCatalogRecord {
    const entry = row ? this.entryOf(row) : undefined;
    return {
      sandboxID,
      entry: entry && row ? { ...entry, nodeID: row.node_id } : undefined,
      token:
        row && entry && TOKEN_STATES.includes(row.state) ? (row.envd_access_token ?? undefined) : undefined,
    };
  }

  async lookup(sandboxID: string): Promise<CatalogEntry | undefined> {
    const cached = this.cache.get(sandboxID);
    if (cached && cached.expires > Date.now()) return cached.entry;
    const row = await getSandbox(this.db, sandboxID);
    return this.update(sandboxID, row);
  }

  /** Resumes a paused sandbox with auto-resume; undefined when it is unknown or cannot be resumed. */
  async resume(sandboxID: string): Promise<CatalogEntry | undefined> {
    return this.resumer ? this.resumer(sandboxID) : undefined;
  }

  async findByAccessToken(verifies: (envdAccessToken: string) => boolean): Promise<CatalogEntry | undefined> {
    let sandboxID = this.matchToken(verifies);
    if (sandboxID === undefined && Date.now() - this.tokensReadAt >= this.tokenRefreshMs) {
      this.tokensReading ??= this.readTokens().finally(() => {
        this.tokensReading = undefined;
      });
      await this.tokensReading;
      sandboxID = this.matchToken(verifies);
    }
    return sandboxID === undefined ? undefined : this.lookup(sandboxID);
  }

  /** Records what the database now says of a sandbox (undefined: it has no row). */
  update(sandboxID: string, row: SandboxRow | undefined): CatalogEntry | undefined {
    const entry = row ? this.entryOf(row) : undefined;
    this.redis?.write(this.redisRecord(sandboxID, row));
    this.setToken(sandboxID, row && TOKEN_STATES.includes(row.state) ? row.envd_access_token : undefined);
    this.cache.delete(sandboxID);
    if (this.cache.size >= this.maxEntries) {
      const oldest = this.cache.keys().next().value;
      if (oldest !== undefined) this.cache.delete(oldest);
    }
    this.cache.set(sandboxID, { entry, expires: Date.now() + (entry ? this.ttlMs : this.missTTLMs) });
    return entry;
  }

  forget(sandboxID: string): void {
    this.redis?.write({ sandboxID, entry: undefined, token: undefined });
    this.cache.delete(sandboxID);
    this.setToken(sandboxID, undefined);
  }

  private matchToken(verifies: (envdAccessToken: string) => boolean): string | undefined {
    for (const [sandboxID, token] of this.tokens) if (verifies(token)) return sandboxID;
    return undefined;
  }

  private setToken(sandboxID: string, token: string | null | undefined): void {
    this.changedDuringRead?.add(sandboxID);
    if (token) this.tokens.set(sandboxID, token);
    else this.tokens.delete(sandboxID);
  }

  private async readTokens(): Promise<void> {
    const changed = new Set<string>();
    this.changedDuringRead = changed;
    try {
      this.tokensReadAt = Date.now();
      const rows = await listAccessTokens(this.db, TOKEN_STATES);
      const read = new Map(rows.map((r) => [r.sandbox_id, r.envd_access_token]));
      for (const sandboxID of changed) {
        const token = this.tokens.get(sandboxID);
        if (token) read.set(sandboxID, token);
        else read.delete(sandboxID);
      }
      this.tokens = read;
    } finally {
      this.changedDuringRead = undefined;
    }
  }
}

const STATES: Record<SandboxRow["state"], CatalogEntry["state"] | undefined> = {
  starting: "starting",
  running: "running",
  pausing: "pausing",
  paused: "paused",
  resuming: "starting",
  killing: "stopping",
  killed: undefined,
};

/** The states whose sandboxes a signed URL can reach (every live one but those being killed). */
export const TOKEN_STATES = (Object.keys(STATES) as SandboxRow["state"][]).filter(
  (state) => state !== "killing" && STATES[state] !== undefined,
);

/** Record states with a routing entry (killed has none). */
export const CATALOG_STATES = (Object.keys(STATES) as SandboxRow["state"][]).filter(
  (state) => STATES[state] !== undefined,
);

/** A record's routing entry; with the proxy URL of its node, it names the node and that proxy. */
export function catalogEntry(row: SandboxRow, nodeProxyURL?: string): CatalogEntry | undefined {
  const state = STATES[row.state];
  if (!state) return undefined;
  return {
    ...(nodeProxyURL ? { nodeID: row.node_id, nodeProxyURL } : {}),
    sandboxID: row.sandbox_id,
    state,
    hostAddress: row.host_address ?? "",
    ...(row.envd_access_token ? { envdAccessToken: row.envd_access_token } : {}),
    ...(row.traffic_access_token ? { trafficAccessToken: row.traffic_access_token } : {}),
    autoResume: row.auto_resume,
  };
}
