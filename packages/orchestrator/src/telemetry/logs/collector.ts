/**
 * Moves what running sandboxes write to their container's output (`<sandbox dir>/runsc.log`:
 * envd's log, in which envd also writes its start command's output) into the node's log store,
 * every `intervalMs` and once more before a sandbox's directory goes. Bounded whatever a sandbox
 * writes: lines are cut at MAX_MESSAGE_CHARS, at most MAX_READ_BYTES are read per sandbox per
 * round (beyond that the oldest unread bytes are skipped, which its log says), and the runsc log
 * is emptied once read past TRUNCATE_BYTES, so that it does not fill the host's disk.
 */
import { open } from "node:fs/promises";
import path from "node:path";
import type { Logger } from "@moat/shared";
import { type LogEntry, MAX_MESSAGE_CHARS, parseLine } from "./entry.js";
import type { SandboxLogStore } from "./store.js";

export const MAX_READ_BYTES = 4 * 2 ** 20;
export const TRUNCATE_BYTES = 2 ** 20;

interface Position {
  offset: number;
  /** The time of the last entry: later entries are not before it. */
  lastT: number;
  /** The start of a line whose end has not been read yet. */
  partial: string;
  /** The rest of a line that was cut is being skipped, up to its newline. */
  skipping: boolean;
}

export interface SandboxLogCollectorOptions {
  store: SandboxLogStore;
  /** The sandboxes whose output is collected now: running ones, with their directories. */
  sandboxes: () => Iterable<{ id: string; dir: string }>;
  intervalMs?: number;
  logger: Logger;
}

export class SandboxLogCollector {
  private readonly positions = new Map<string, Position>();
  private readonly running = new Map<string, Promise<void>>();
  private timer: NodeJS.Timeout | undefined;
  private round: Promise<void> | undefined;

  constructor(private readonly options: SandboxLogCollectorOptions) {}

  /** Starts collecting; what the sandboxes already there wrote before (a node restart) is skipped. */
  start(): void {
    for (const { id, dir } of this.options.sandboxes()) void this.collect(id, dir, true);
    this.timer = setInterval(() => {
      if (!this.round) this.round = this.collectAll().finally(() => (this.round = undefined));
    }, this.options.intervalMs ?? 1000);
    this.timer.unref();
  }

  async stop(): Promise<void> {
    clearInterval(this.timer);
    await this.round;
  }

  private async collectAll(): Promise<void> {
    for (const { id, dir } of this.options.sandboxes()) await this.collect(id, dir);
  }

  /** Reads what the sandbox wrote since the last read; a first read with `fromEnd` starts at the end. */
  collect(sandboxID: string, dir: string, fromEnd = false): Promise<void> {
    const previous = this.running.get(sandboxID) ?? Promise.resolve();
    const next = previous
      .then(() => this.read(sandboxID, dir, fromEnd))
      .catch((err: unknown) =>
        this.options.logger.warn({ err, sandboxID }, "reading the sandbox's output for its log failed"),
      );
    this.running.set(sandboxID, next);
    void next.then(() => {
      if (this.running.get(sandboxID) === next) this.running.delete(sandboxID);
    });
    return next;
  }

  /** The sandbox is gone: its last output was collected. */
  forget(sandboxID: string): void {
    this.positions.delete(sandboxID);
  }

  private async read(sandboxID: string, dir: string, fromEnd: boolean): Promise<void> {
    const file = path.join(dir, "runsc.log");
    const handle = await open(file, "r+").catch(() => undefined);
    if (!handle) return;
    try {
      const { size } = await handle.stat();
      let pos = this.positions.get(sandboxID);
      if (!pos) {
        pos = { offset: fromEnd ? size : 0, lastT: 0, partial: "", skipping: false };
        this.positions.set(sandboxID, pos);
      }
      // Emptied by someone else, or a new file: start over.
      if (size < pos.offset) Object.assign(pos, { offset: 0, partial: "", skipping: false });
      if (size === pos.offset) return;
      const now = Date.now();
      const entries: LogEntry[] = [];
      if (size - pos.offset > MAX_READ_BYTES) {
        const skipped = size - MAX_READ_BYTES - pos.offset;
        entries.push({
          t: Math.max(pos.lastT, now),
          l: "warn",
          m: `${skipped} bytes of the sandbox's output were dropped: it wrote more than ${MAX_READ_BYTES / 2 ** 20} MiB in ${(this.options.intervalMs ?? 1000) / 1000} s`,
          s: "node",
        });
        Object.assign(pos, { offset: size - MAX_READ_BYTES, partial: "", skipping: true });
      }
      const buffer = Buffer.alloc(size - pos.offset);
      const { bytesRead } = await handle.read(buffer, 0, buffer.length, pos.offset);
      pos.offset += bytesRead;
      const parts = (pos.partial + buffer.subarray(0, bytesRead).toString("utf8")).split("\n");
      pos.partial = parts.pop() ?? "";
      for (const part of parts) {
        if (pos.skipping) {
          pos.skipping = false;
          continue;
        }
        if (part.length > 0) entries.push(this.entry(pos, part, now));
      }
      if (pos.partial.length > MAX_MESSAGE_CHARS) {
        if (!pos.skipping) entries.push(this.entry(pos, pos.partial, now));
        pos.partial = "";
        pos.skipping = true;
      }
      await this.options.store.append(sandboxID, entries);
      if (pos.offset >= TRUNCATE_BYTES) {
        // Only when nothing came since the read: the runtime appends (O_APPEND) after the cut.
        const again = await handle.stat();
        if (again.size === pos.offset) {
          await handle.truncate(0);
          pos.offset = 0;
        }
      }
    } finally {
      await handle.close();
    }
  }

  private entry(pos: Position, line: string, now: number): LogEntry {
    const entry = parseLine(line, now, pos.lastT);
    pos.lastT = entry.t;
    return entry;
  }
}
