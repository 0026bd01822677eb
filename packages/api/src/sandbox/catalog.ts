/**
 * The routing catalog the client proxy reads (`SandboxCatalog` in @moat/shared), backed by the
 * sandboxes table with an in-memory cache in front. Every state change the API makes or learns
 * from a node goes through `update`/`forget` here, so the cache of this process never serves a
 * killed sandbox; entries also expire, which bounds the staleness other API processes can cause.
 * A sandbox being paused reads as stopping and one being resumed as starting: the proxy answers
 * "transitioning, retry" for both. `resume` is the proxy's auto-resume, run by the API (see
 * `autoResume` in ./resume.ts).
 */
import type { CatalogEntry, SandboxCatalog } from "@moat/shared";
import type { DB } from "../db/database.js";
import { getSandbox } from "../db/sandboxes.js";
import type { SandboxRow } from "../db/schema.js";

export interface CatalogOptions {
  /** Resumes a paused sandbox for the proxy; without it the catalog cannot resume. */
  resume?: (sandboxID: string) => Promise<CatalogEntry | undefined>;
  /** How long a found entry is served from memory. */
  ttlMs?: number;
  /** How long "no such sandbox" is remembered (bounds the database reads of junk traffic). */
  missTTLMs?: number;
  /** Most entries kept; the oldest go first. */
  maxEntries?: number;
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

  constructor(
    private readonly db: DB,
    options: CatalogOptions = {},
  ) {
    this.resumer = options.resume;
    this.ttlMs = options.ttlMs ?? 30_000;
    this.missTTLMs = options.missTTLMs ?? 1_000;
    this.maxEntries = options.maxEntries ?? 100_000;
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

  /** Records what the database now says of a sandbox (undefined: it has no row). */
  update(sandboxID: string, row: SandboxRow | undefined): CatalogEntry | undefined {
    const entry = row ? catalogEntry(row) : undefined;
    this.cache.delete(sandboxID);
    if (this.cache.size >= this.maxEntries) {
      const oldest = this.cache.keys().next().value;
      if (oldest !== undefined) this.cache.delete(oldest);
    }
    this.cache.set(sandboxID, { entry, expires: Date.now() + (entry ? this.ttlMs : this.missTTLMs) });
    return entry;
  }

  forget(sandboxID: string): void {
    this.cache.delete(sandboxID);
  }
}

const STATES: Record<SandboxRow["state"], CatalogEntry["state"] | undefined> = {
  starting: "starting",
  running: "running",
  pausing: "stopping",
  paused: "paused",
  resuming: "starting",
  killing: "stopping",
  killed: undefined,
};

export function catalogEntry(row: SandboxRow): CatalogEntry | undefined {
  const state = STATES[row.state];
  if (!state) return undefined;
  return {
    sandboxID: row.sandbox_id,
    state,
    hostAddress: row.host_address ?? "",
    ...(row.envd_access_token ? { envdAccessToken: row.envd_access_token } : {}),
    ...(row.traffic_access_token ? { trafficAccessToken: row.traffic_access_token } : {}),
    autoResume: row.auto_resume,
  };
}
