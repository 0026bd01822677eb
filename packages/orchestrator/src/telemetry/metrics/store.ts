/**
 * The node's history of sandbox metrics: one file per sandbox under
 * `<data-dir>/telemetry/metrics/<sandboxID>.metrics`, kept after the sandbox ends until the
 * retention has passed. The file is a fixed header (a magic and the SHA-256 of the sandbox's team)
 * then fixed-size binary records, so nothing a sandbox reports is ever parsed back as text, a read
 * of a range costs no more than the file's size, and the file's size is capped: past the cap the
 * oldest quarter of the records goes.
 */
import { createHash } from "node:crypto";
import { constants } from "node:fs";
import { open, readdir, readFile, rename, stat, unlink } from "node:fs/promises";
import path from "node:path";
import { makePrivateDir } from "@moat/shared";

/** One reading of a sandbox's own view of its resources, at `time` (unix seconds, the node's clock). */
export interface MetricSample {
  time: number;
  cpuCount: number;
  cpuUsedPct: number;
  memUsed: number;
  memTotal: number;
  memCache: number;
  diskUsed: number;
  diskTotal: number;
}

export interface MetricsQuery {
  /** Unix seconds, both included; unset: from the oldest, to the newest. */
  start?: number;
  end?: number;
  /** Averages over buckets of this many seconds (0 or unset: every sample). */
  stepSeconds?: number;
  /** Only the newest sample in the range. */
  latest?: boolean;
}

/** A sandbox id as the node accepts them (sandbox/create-input.ts): also what keeps reads inside the directory. */
const SANDBOX_ID = /^[a-z0-9]{1,63}$/;
const MAGIC = Buffer.from("MOATMTR1");
const HEADER_BYTES = 64;
const RECORD_BYTES = 32;
/** Memory and disk are kept in KiB in 32 bits (4 TiB at most): what envd reports is whole KiB. */
const KIB = 1024;
const MAX_KIB = 0xffff_ffff;
/** A file's cap when none is given: at the default 5 s interval, about 3 days. */
export const DEFAULT_MAX_FILE_BYTES = 2 * 2 ** 20;
/** What one answer holds at most: a longer range is averaged over wider buckets. */
export const MAX_SAMPLES_PER_READ = 10_000;

export class InvalidMetricsQueryError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "InvalidMetricsQueryError";
  }
}

export interface MetricsStoreOptions {
  /** `<data-dir>/telemetry/metrics`. */
  dir: string;
  /** How long samples are kept, in ms (also after the sandbox ends). */
  retentionMs: number;
  /** A file's cap in bytes (default DEFAULT_MAX_FILE_BYTES). */
  maxFileBytes?: number;
  now?: () => number;
}

export class MetricsStore {
  private readonly maxRecords: number;
  private readonly now: () => number;
  /** Sandboxes whose file this process checked (its header is this team's): appends skip the read. */
  private readonly checked = new Map<string, Buffer>();

  constructor(private readonly options: MetricsStoreOptions) {
    const maxBytes = Math.max(
      HEADER_BYTES + 4 * RECORD_BYTES,
      options.maxFileBytes ?? DEFAULT_MAX_FILE_BYTES,
    );
    this.maxRecords = Math.floor((maxBytes - HEADER_BYTES) / RECORD_BYTES);
    this.now = options.now ?? Date.now;
  }

  static forDataDir(dataDir: string, options: Omit<MetricsStoreOptions, "dir">): MetricsStore {
    return new MetricsStore({ ...options, dir: path.join(dataDir, "telemetry", "metrics") });
  }

  /** Appends one sample to the sandbox's file (made, or remade for another team, as needed). */
  async append(sandboxID: string, teamID: string, sample: MetricSample): Promise<void> {
    const file = this.fileOf(sandboxID);
    const header = headerOf(teamID);
    if (!this.checked.get(sandboxID)?.equals(header)) {
      await makePrivateDir(this.options.dir);
      const current = await readFile(file).catch(() => undefined);
      if (!current || !validFile(current) || !current.subarray(0, HEADER_BYTES).equals(header)) {
        await this.replace(file, header, []);
      }
      this.checked.set(sandboxID, header);
    }
    const size = (await stat(file).catch(() => undefined))?.size ?? 0;
    if (size < HEADER_BYTES) {
      await this.replace(file, header, []);
    } else if ((size - HEADER_BYTES) / RECORD_BYTES >= this.maxRecords) {
      // Full: keep the newest three quarters, so that this happens once per quarter of the cap.
      const records = recordsOf(await readFile(file));
      await this.replace(file, header, records.slice(records.length - Math.floor((this.maxRecords * 3) / 4)));
    }
    const fh = await open(file, constants.O_WRONLY | constants.O_APPEND | constants.O_NOFOLLOW, 0o600);
    try {
      await fh.write(encode(sample));
    } finally {
      await fh.close();
    }
  }

  /**
   * The sandbox's samples in the range, oldest first. A sandbox with no file, or whose file is
   * another team's, has none: the caller cannot tell the two apart.
   */
  async read(sandboxID: string, teamID: string, query: MetricsQuery = {}): Promise<MetricSample[]> {
    checkQuery(query);
    const file = await readFile(this.fileOf(sandboxID)).catch(() => undefined);
    if (!file || !validFile(file) || !file.subarray(0, HEADER_BYTES).equals(headerOf(teamID))) return [];
    const oldest = Math.floor((this.now() - this.options.retentionMs) / 1000);
    const start = Math.max(query.start ?? 0, oldest);
    const end = query.end ?? Number.POSITIVE_INFINITY;
    const samples = recordsOf(file)
      .map(decode)
      .filter((s) => s.time >= start && s.time <= end);
    if (query.latest) return samples.slice(-1);
    let step = query.stepSeconds ?? 0;
    if (samples.length > MAX_SAMPLES_PER_READ) {
      const span = samples[samples.length - 1]!.time - samples[0]!.time + 1;
      step = Math.max(step, Math.ceil(span / MAX_SAMPLES_PER_READ));
    }
    return step > 1 ? bucket(samples, step) : samples;
  }

  /** Removes the files of sandboxes with no sample within the retention; answers how many. */
  async sweep(): Promise<number> {
    const names = await readdir(this.options.dir).catch(() => [] as string[]);
    const cutoff = this.now() - this.options.retentionMs;
    let removed = 0;
    for (const name of names) {
      const file = path.join(this.options.dir, name);
      const st = await stat(file).catch(() => undefined);
      if (!st || st.mtimeMs >= cutoff) continue;
      await unlink(file).catch(() => undefined);
      this.checked.delete(name.replace(/\.metrics$/, ""));
      removed++;
    }
    return removed;
  }

  private fileOf(sandboxID: string): string {
    if (!SANDBOX_ID.test(sandboxID)) {
      throw new InvalidMetricsQueryError(`sandbox id '${sandboxID}' must match ${SANDBOX_ID}`);
    }
    return path.join(this.options.dir, `${sandboxID}.metrics`);
  }

  private async replace(file: string, header: Buffer, records: Buffer[]): Promise<void> {
    const tmp = `${file}.tmp`;
    const fh = await open(
      tmp,
      constants.O_WRONLY | constants.O_CREAT | constants.O_TRUNC | constants.O_NOFOLLOW,
      0o600,
    );
    try {
      await fh.write(Buffer.concat([header, ...records]));
    } finally {
      await fh.close();
    }
    await rename(tmp, file);
  }
}

function checkQuery(query: MetricsQuery): void {
  for (const [name, value] of [
    ["start", query.start],
    ["end", query.end],
    ["step", query.stepSeconds],
  ] as const) {
    if (value !== undefined && (!Number.isInteger(value) || value < 0)) {
      throw new InvalidMetricsQueryError(`${name} must be a whole number ≥ 0, got ${value}`);
    }
  }
  if (query.start !== undefined && query.end !== undefined && query.start > query.end) {
    throw new InvalidMetricsQueryError(`start (${query.start}) is after end (${query.end})`);
  }
}

function headerOf(teamID: string): Buffer {
  const header = Buffer.alloc(HEADER_BYTES);
  MAGIC.copy(header, 0);
  createHash("sha256").update(teamID).digest().copy(header, MAGIC.length);
  return header;
}

function validFile(file: Buffer): boolean {
  return file.length >= HEADER_BYTES && file.subarray(0, MAGIC.length).equals(MAGIC);
}

/** The whole records of a file (a torn last write is left out). */
function recordsOf(file: Buffer): Buffer[] {
  const records: Buffer[] = [];
  for (let at = HEADER_BYTES; at + RECORD_BYTES <= file.length; at += RECORD_BYTES) {
    records.push(file.subarray(at, at + RECORD_BYTES));
  }
  return records;
}

/** 32 bytes, little-endian: time u32, cpu count u16, (unused) u16, cpu % f32, five KiB counts u32. */
export function encode(s: MetricSample): Buffer {
  const b = Buffer.alloc(RECORD_BYTES);
  b.writeUInt32LE(clampInt(s.time, 0xffff_ffff), 0);
  b.writeUInt16LE(clampInt(s.cpuCount, 0xffff), 4);
  b.writeFloatLE(Math.min(100, Math.max(0, finite(s.cpuUsedPct))), 8);
  const kib = [s.memUsed, s.memTotal, s.memCache, s.diskUsed, s.diskTotal];
  for (const [i, bytes] of kib.entries()) {
    b.writeUInt32LE(clampInt(Math.round(finite(bytes) / KIB), MAX_KIB), 12 + 4 * i);
  }
  return b;
}

export function decode(b: Buffer): MetricSample {
  const kib = (i: number) => b.readUInt32LE(12 + 4 * i) * KIB;
  return {
    time: b.readUInt32LE(0),
    cpuCount: b.readUInt16LE(4),
    cpuUsedPct: Math.round(b.readFloatLE(8) * 100) / 100,
    memUsed: kib(0),
    memTotal: kib(1),
    memCache: kib(2),
    diskUsed: kib(3),
    diskTotal: kib(4),
  };
}

/** Averages per bucket of `step` seconds, stamped with the bucket's start. */
function bucket(samples: MetricSample[], step: number): MetricSample[] {
  const out: MetricSample[] = [];
  let group: MetricSample[] = [];
  const flush = () => {
    if (group.length === 0) return;
    const avg = (pick: (s: MetricSample) => number) => group.reduce((a, s) => a + pick(s), 0) / group.length;
    out.push({
      time: Math.floor(group[0]!.time / step) * step,
      cpuCount: Math.max(...group.map((s) => s.cpuCount)),
      cpuUsedPct: Math.round(avg((s) => s.cpuUsedPct) * 100) / 100,
      memUsed: Math.round(avg((s) => s.memUsed)),
      memTotal: Math.round(avg((s) => s.memTotal)),
      memCache: Math.round(avg((s) => s.memCache)),
      diskUsed: Math.round(avg((s) => s.diskUsed)),
      diskTotal: Math.round(avg((s) => s.diskTotal)),
    });
    group = [];
  };
  for (const s of samples) {
    if (group.length > 0 && Math.floor(s.time / step) !== Math.floor(group[0]!.time / step)) flush();
    group.push(s);
  }
  flush();
  return out;
}

function finite(value: number): number {
  return Number.isFinite(value) ? value : 0;
}

function clampInt(value: number, max: number): number {
  return Math.min(max, Math.max(0, Math.floor(finite(value))));
}
