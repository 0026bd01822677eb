/**
 * The node's cache of what it fetched from shared storage (template builds with their layers, named
 * snapshots), bounded in size: past the bound, the least recently used entries are evicted, never
 * one in use (a build whose sandboxes run or whose layers are mounted, a snapshot being copied).
 * What this node made itself is not an entry: it is the original, not a copy.
 *
 * The index (`<dataDir>/artifacts/cache.json`: id → bytes, last use) survives restarts. A fetch
 * runs once per key at a time: concurrent creates of one build wait for the same download.
 */
import { readFile } from "node:fs/promises";
import path from "node:path";
import type { Logger } from "@moat/shared";
import { writeFileAtomic } from "../host/files.js";

export interface CacheEntry {
  bytes: number;
  /** Milliseconds since the epoch. */
  lastUsed: number;
}

export interface ArtifactCacheOptions {
  /** The index file. */
  file: string;
  limitBytes: number;
  logger: Logger;
  /** Whether an entry may not be evicted now. */
  inUse: (id: string) => boolean;
  /** Removes an entry's files (its index entry goes after). */
  remove: (id: string) => Promise<void>;
  now?: () => number;
}

export const DEFAULT_ARTIFACT_CACHE_MB = 20480;

export class ArtifactCache {
  private entries = new Map<string, CacheEntry>();
  private readonly flights = new Map<string, Promise<unknown>>();
  private evicting: Promise<void> | undefined;

  constructor(private readonly options: ArtifactCacheOptions) {}

  async load(): Promise<void> {
    try {
      const saved = JSON.parse(await readFile(this.options.file, "utf8")) as Record<string, CacheEntry>;
      this.entries = new Map(Object.entries(saved));
    } catch {
      this.entries = new Map();
    }
  }

  /** Runs `fetch` for `key` unless one is under way, whose result is shared instead. */
  once<T>(key: string, fetch: () => Promise<T>): Promise<T> {
    const running = this.flights.get(key);
    if (running) return running as Promise<T>;
    const flight = fetch().finally(() => this.flights.delete(key));
    this.flights.set(key, flight);
    return flight;
  }

  has(id: string): boolean {
    return this.entries.has(id);
  }

  ids(): string[] {
    return [...this.entries.keys()];
  }

  /** Records a fetched entry, then evicts what no longer fits. */
  async add(id: string, bytes: number): Promise<void> {
    this.entries.set(id, { bytes, lastUsed: this.now() });
    await this.save();
    await this.evict();
  }

  /** Marks an entry as just used (an LRU's clock; saved with the next change). */
  touch(id: string): void {
    const entry = this.entries.get(id);
    if (entry) entry.lastUsed = this.now();
  }

  /** Forgets an entry whose files went another way (a deleted build). */
  async forget(id: string): Promise<void> {
    if (this.entries.delete(id)) await this.save();
  }

  get usedBytes(): number {
    let total = 0;
    for (const entry of this.entries.values()) total += entry.bytes;
    return total;
  }

  /** Evicts least recently used entries not in use until the cache fits its bound. */
  evict(): Promise<void> {
    this.evicting ??= this.doEvict().finally(() => {
      this.evicting = undefined;
    });
    return this.evicting;
  }

  private async doEvict(): Promise<void> {
    const { limitBytes, logger, inUse, remove } = this.options;
    if (this.usedBytes <= limitBytes) return;
    const oldest = [...this.entries.entries()].sort((a, b) => a[1].lastUsed - b[1].lastUsed);
    for (const [id, entry] of oldest) {
      if (this.usedBytes <= limitBytes) break;
      if (inUse(id) || this.flights.has(id)) continue;
      try {
        await remove(id);
        this.entries.delete(id);
        logger.info({ id, bytes: entry.bytes }, "artifact evicted from the node's cache");
      } catch (err) {
        logger.warn({ err, id }, "evicting an artifact from the node's cache failed");
      }
    }
    await this.save();
    if (this.usedBytes > limitBytes) {
      logger.warn(
        { usedMB: Math.round(this.usedBytes / 2 ** 20), limitMB: Math.round(limitBytes / 2 ** 20) },
        "the artifact cache is over its bound: everything left in it is in use",
      );
    }
  }

  private async save(): Promise<void> {
    await writeFileAtomic(this.options.file, JSON.stringify(Object.fromEntries(this.entries)), 0o600);
  }

  private now(): number {
    return (this.options.now ?? Date.now)();
  }
}

/** `<dataDir>/artifacts`: the cache's index and downloads under way. */
export function artifactsDir(dataDir: string): string {
  return path.join(dataDir, "artifacts");
}
