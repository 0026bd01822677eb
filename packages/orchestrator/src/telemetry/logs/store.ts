/**
 * The node's sandbox logs: one file of JSON lines per sandbox under `<data-dir>/telemetry/logs/`,
 * kept after the sandbox ends until `retentionHours` pass without a write. A sandbox's log holds
 * at most `maxBytes`: past half of it the file becomes `<id>.1.jsonl` (replacing the one before,
 * whose entries are dropped, which the log says once) and a new one starts.
 */
import { appendFile, mkdir, open, readdir, readFile, rename, rm, stat, writeFile } from "node:fs/promises";
import path from "node:path";
import type { Logger } from "@moat/shared";
import { LOG_LEVELS, type LogEntry, type LogLevel } from "./entry.js";

export const DEFAULT_LOGS_RETENTION_HOURS = 168;
export const DEFAULT_LOGS_MAX_MB = 10;
export const DEFAULT_LOGS_TOTAL_MB = 10240;
export const MAX_QUERY_ENTRIES = 1000;
const SANDBOX_ID = /^[a-z0-9]{1,63}$/;
const SWEEP_INTERVAL_MS = 10 * 60_000;
/** The start of every line the store writes: its time and level. */
const HEAD = /^\{"t":(\d+),"l":"([a-z]+)"/;

export interface LogQuery {
  /** Unix ms, inclusive: the first (forward) or last (backward) time answered; 0: no bound. */
  cursor: number;
  limit: number;
  direction: "forward" | "backward";
  level: LogLevel;
  search: string;
}

export interface SandboxLogStoreOptions {
  dataDir: string;
  retentionHours: number;
  maxBytes: number;
  /** What all sandboxes' logs may hold together (default: no bound): ended sandboxes' go first. */
  maxTotalBytes?: number;
  logger: Logger;
  /** Sandboxes the node still has (running or paused): their logs are not swept. */
  isLive?: (sandboxID: string) => boolean;
}

export class SandboxLogStore {
  readonly dir: string;
  /** Bytes of each sandbox's current file, once known. */
  private readonly sizes = new Map<string, number>();
  /** Appends of one sandbox run one after another. */
  private readonly queues = new Map<string, Promise<void>>();
  private sweeper: NodeJS.Timeout | undefined;

  constructor(private readonly options: SandboxLogStoreOptions) {
    this.dir = path.join(options.dataDir, "telemetry", "logs");
  }

  async start(): Promise<void> {
    await mkdir(this.dir, { recursive: true, mode: 0o700 });
    await this.sweep();
    this.sweeper = setInterval(() => void this.sweep(), SWEEP_INTERVAL_MS);
    this.sweeper.unref();
  }

  stop(): void {
    clearInterval(this.sweeper);
  }

  private file(sandboxID: string, older = false): string {
    return path.join(this.dir, `${sandboxID}${older ? ".1" : ""}.jsonl`);
  }

  append(sandboxID: string, entries: readonly LogEntry[]): Promise<void> {
    if (!SANDBOX_ID.test(sandboxID) || entries.length === 0) return Promise.resolve();
    const previous = this.queues.get(sandboxID) ?? Promise.resolve();
    const next = previous
      .then(() => this.write(sandboxID, entries))
      .catch((err: unknown) =>
        this.options.logger.warn({ err, sandboxID }, "writing the sandbox's log failed"),
      );
    this.queues.set(sandboxID, next);
    void next.then(() => {
      if (this.queues.get(sandboxID) === next) this.queues.delete(sandboxID);
    });
    return next;
  }

  private async write(sandboxID: string, entries: readonly LogEntry[]): Promise<void> {
    const half = Math.max(1, Math.floor(this.options.maxBytes / 2));
    let data = `${entries.map((e) => JSON.stringify(e)).join("\n")}\n`;
    let size = this.sizes.get(sandboxID);
    if (size === undefined)
      size = await stat(this.file(sandboxID)).then(
        (s) => s.size,
        () => 0,
      );
    if (size > 0 && size + Buffer.byteLength(data) > half) {
      const dropped = await stat(this.file(sandboxID, true)).then(
        () => true,
        () => false,
      );
      await rename(this.file(sandboxID), this.file(sandboxID, true));
      size = 0;
      const marker = path.join(this.dir, `${sandboxID}.dropped`);
      if (
        dropped &&
        !(await stat(marker).then(
          () => true,
          () => false,
        ))
      ) {
        await writeFile(marker, "", { mode: 0o600 });
        const note: LogEntry = {
          t: entries[0]!.t,
          l: "warn",
          m: `this sandbox's log passed ${this.options.maxBytes / 2 ** 20} MiB: its oldest entries were dropped (and will be as it grows)`,
          s: "node",
        };
        data = `${JSON.stringify(note)}\n${data}`;
      }
    }
    await appendFile(this.file(sandboxID), data, { mode: 0o600 });
    this.sizes.set(sandboxID, size + Buffer.byteLength(data));
  }

  /**
   * Entries of a sandbox's log for `query`; a sandbox without a log has none. Files are in time
   * order: the walk goes the query's way and stops at `limit`, and each line's time and level are
   * read from its start (the writer puts them first) before the line is parsed at all.
   */
  async query(sandboxID: string, query: LogQuery): Promise<LogEntry[]> {
    if (!SANDBOX_ID.test(sandboxID)) return [];
    await this.queues.get(sandboxID);
    const levels = LOG_LEVELS.slice(LOG_LEVELS.indexOf(query.level));
    const forward = query.direction === "forward";
    const limit = Math.min(query.limit || MAX_QUERY_ENTRIES, MAX_QUERY_ENTRIES);
    // JSON escapes character by character: a message holding `search` holds its escaped form.
    const escaped = query.search ? JSON.stringify(query.search).slice(1, -1) : "";
    const entries: LogEntry[] = [];
    for (const older of forward ? [true, false] : [false, true]) {
      const file = this.file(sandboxID, older);
      // A dashboard tails with a recent cursor: only the end of the file is read for it.
      const text =
        forward && query.cursor > 0
          ? await readFrom(file, query.cursor)
          : await readFile(file, "utf8").catch(() => "");
      const lines = text.split("\n");
      if (!forward) lines.reverse();
      for (const line of lines) {
        if (!line) continue;
        const head = HEAD.exec(line);
        if (head) {
          const t = Number(head[1]);
          if (query.cursor > 0 && (forward ? t < query.cursor : t > query.cursor)) continue;
          if (!levels.includes(head[2] as LogLevel)) continue;
        }
        if (escaped && !line.includes(escaped)) continue;
        let entry: LogEntry;
        try {
          entry = JSON.parse(line) as LogEntry;
        } catch {
          continue; // A line cut by a crash mid-write.
        }
        if (!levels.includes(entry.l)) continue;
        if (query.cursor > 0 && (forward ? entry.t < query.cursor : entry.t > query.cursor)) continue;
        if (query.search && !entry.m.includes(query.search)) continue;
        entries.push(entry);
        if (entries.length >= limit) break;
      }
      if (entries.length >= limit) break;
    }
    // Stable, for the rare entries written out of order (a node restart resets the time floor).
    entries.sort((a, b) => (forward ? a.t - b.t : b.t - a.t));
    return entries;
  }

  /**
   * Removes the logs untouched for the retention time, then, while all of them hold more than
   * `maxTotalBytes`, the least recently written: never those of sandboxes the node still has.
   */
  async sweep(): Promise<void> {
    const cutoff = Date.now() - this.options.retentionHours * 3_600_000;
    const names = await readdir(this.dir).catch(() => [] as string[]);
    const kept: Array<{ file: string; sandboxID: string; size: number; mtimeMs: number }> = [];
    let total = 0;
    for (const name of names) {
      const sandboxID = name.split(".")[0]!;
      const file = path.join(this.dir, name);
      const info = await stat(file).catch(() => undefined);
      if (!info) continue;
      total += info.size;
      if (this.options.isLive?.(sandboxID) || this.queues.has(sandboxID)) continue;
      if (info.mtimeMs >= cutoff) {
        kept.push({ file, sandboxID, size: info.size, mtimeMs: info.mtimeMs });
        continue;
      }
      await this.remove(file, sandboxID);
      total -= info.size;
    }
    const budget = this.options.maxTotalBytes ?? Number.POSITIVE_INFINITY;
    kept.sort((a, b) => a.mtimeMs - b.mtimeMs);
    for (const entry of kept) {
      if (total <= budget) break;
      await this.remove(entry.file, entry.sandboxID);
      total -= entry.size;
    }
  }

  private async remove(file: string, sandboxID: string): Promise<void> {
    await rm(file, { force: true }).catch(() => undefined);
    this.sizes.delete(sandboxID);
  }
}

const SEEK_CHUNK = 64 * 1024;

/**
 * A log file from its first line at or after `cursor` on, found by bisecting byte offsets (its
 * lines are in time order); from the start when a line is longer than a probe.
 */
async function readFrom(file: string, cursor: number): Promise<string> {
  const handle = await open(file, "r").catch(() => undefined);
  if (!handle) return "";
  try {
    const { size } = await handle.stat();
    // The first line at or after `cursor` starts in [lo, hi]; both are line starts (or the end).
    let lo = 0;
    let hi = size;
    const probe = Buffer.alloc(SEEK_CHUNK);
    while (hi - lo > SEEK_CHUNK) {
      const mid = Math.floor((lo + hi) / 2);
      const { bytesRead } = await handle.read(probe, 0, SEEK_CHUNK, mid);
      const newline = probe.subarray(0, bytesRead).indexOf(10);
      if (newline < 0) break;
      const start = mid + newline + 1;
      const head = HEAD.exec(probe.subarray(newline + 1, bytesRead).toString("utf8"));
      if (!head || start >= hi) break;
      if (Number(head[1]) < cursor) lo = start;
      else hi = start;
    }
    const rest = Buffer.alloc(size - lo);
    const { bytesRead } = await handle.read(rest, 0, rest.length, lo);
    return rest.subarray(0, bytesRead).toString("utf8");
  } finally {
    await handle.close();
  }
}
