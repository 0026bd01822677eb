/**
 * The node's sandbox logs: one file of JSON lines per sandbox under `<data-dir>/telemetry/logs/`,
 * kept after the sandbox ends until `retentionHours` pass without a write. A sandbox's log holds
 * at most `maxBytes`: past half of it the file becomes `<id>.1.jsonl` (replacing the one before,
 * whose entries are dropped, which the log says once) and a new one starts.
 */
import { appendFile, mkdir, readdir, readFile, rename, rm, stat, writeFile } from "node:fs/promises";
import path from "node:path";
import type { Logger } from "@moat/shared";
import { LOG_LEVELS, type LogEntry, type LogLevel } from "./entry.js";

export const DEFAULT_LOGS_RETENTION_HOURS = 168;
export const DEFAULT_LOGS_MAX_MB = 10;
export const MAX_QUERY_ENTRIES = 1000;
const SANDBOX_ID = /^[a-z0-9]{1,63}$/;
const SWEEP_INTERVAL_MS = 10 * 60_000;

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

  /** Entries of a sandbox's log for `query`; a sandbox without a log has none. */
  async query(sandboxID: string, query: LogQuery): Promise<LogEntry[]> {
    if (!SANDBOX_ID.test(sandboxID)) return [];
    await this.queues.get(sandboxID);
    const levels = LOG_LEVELS.slice(LOG_LEVELS.indexOf(query.level));
    const forward = query.direction === "forward";
    const limit = Math.min(query.limit || MAX_QUERY_ENTRIES, MAX_QUERY_ENTRIES);
    const entries: LogEntry[] = [];
    for (const older of [true, false]) {
      const text = await readFile(this.file(sandboxID, older), "utf8").catch(() => "");
      for (const line of text.split("\n")) {
        if (!line) continue;
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
      }
    }
    // Stable: entries of the same millisecond keep the order they were written in (reversed when
    // newest first).
    entries.sort((a, b) => a.t - b.t);
    if (!forward) entries.reverse();
    return entries.slice(0, limit);
  }

  /** Removes the logs untouched for the retention time, but for sandboxes the node still has. */
  async sweep(): Promise<void> {
    const cutoff = Date.now() - this.options.retentionHours * 3_600_000;
    const names = await readdir(this.dir).catch(() => [] as string[]);
    for (const name of names) {
      const sandboxID = name.split(".")[0]!;
      if (this.options.isLive?.(sandboxID) || this.queues.has(sandboxID)) continue;
      const file = path.join(this.dir, name);
      const info = await stat(file).catch(() => undefined);
      if (!info || info.mtimeMs >= cutoff) continue;
      await rm(file, { force: true }).catch(() => undefined);
      this.sizes.delete(sandboxID);
    }
  }
}
