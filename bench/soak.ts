/**
 * Soak: `npm run bench -- soak` (20 minutes by default; `--minutes=N` or MOAT_SOAK_MINUTES, `--short`
 * for 2). One `moat up` (warm pool on, as deployed) and, through the unmodified SDK:
 * - clients (`--clients=N`, MOAT_SOAK_CLIENTS, default 6), each looping over sandbox lives: create,
 *   then a few cycles of commands (output checked), file writes (random content of varied sizes,
 *   through the SDK and from a process, each remembered by its sha256), reads back, pause, resume
 *   and a check of every file by hash, then kill;
 * - keepers (`--keepers=N`, MOAT_SOAK_KEEPERS, default 2): sandboxes kept for the whole run through
 *   as many pause/resume cycles as fit, with a process that must survive every one;
 * - forks, once moat has them: see `forkStep`.
 * At the end every sandbox not killed is resumed and each of its files checked by hash, moat is
 * stopped and the host compared with its picture from before (network namespaces, links, mounts,
 * loop devices, cgroups, runsc containers, processes). Prints each operation's count and error rate
 * (errors classified), lost files, leaks, moat's memory over the run (RSS start, end, max, slope)
 * and the latencies of create, command, pause and resume beside the first minute's. Writes the
 * details to .bench/soak.json and moat's log to .bench/soak-moat.log; sets a failing exit code
 * when a file was lost, anything leaked or moat did not stop.
 */
import { createHash, randomBytes, randomInt } from "node:crypto";
import { mkdir, readFile, writeFile } from "node:fs/promises";
import { cpus } from "node:os";
import path from "node:path";
import { CommandExitError, NotFoundError, Sandbox } from "e2b";
import { type RunningMoat, startMoat, useMoat } from "../tests/integration/helpers/moat-up.js";
import { removeDataDir } from "../tests/integration/helpers/orchestrator.js";
import {
  descendants,
  describe,
  diffPictures,
  type HostPicture,
  type ProcessInfo,
  pictureHost,
  processes,
  processUsage,
} from "./host-state.js";
import { BENCH_QUOTAS } from "./quotas.js";
import type { Figure } from "./report.js";
import { type Summary, slope, summarize } from "./stats.js";

export interface SoakConfig {
  minutes: number;
  clients: number;
  keepers: number;
  poolSize: number;
  /** Forks: "auto" uses them when the API's OpenAPI document has the fork route. */
  fork: "auto" | "on" | "off";
}

/** Flags (`--minutes=N`, `--clients=N`, `--keepers=N`, `--short`) win over MOAT_SOAK_* variables. */
export function soakConfig(argv: string[], env: NodeJS.ProcessEnv): SoakConfig {
  const flag = (name: string) => argv.find((a) => a.startsWith(`--${name}=`))?.split("=")[1];
  const count = (name: string, value: string | undefined, fallback: number, min: number) => {
    if (value === undefined || value === "") return fallback;
    const n = Number(value);
    if (!Number.isFinite(n) || n < min)
      throw new Error(`soak: ${name} must be a number ≥ ${min}, not '${value}'`);
    return n;
  };
  const short = argv.includes("--short");
  const fork = flag("fork") ?? env.MOAT_SOAK_FORK ?? "auto";
  if (!["auto", "on", "off"].includes(fork))
    throw new Error(`soak: fork must be auto, on or off, not '${fork}'`);
  return {
    minutes: count("minutes", flag("minutes") ?? env.MOAT_SOAK_MINUTES, short ? 2 : 20, 0.5),
    clients: Math.floor(count("clients", flag("clients") ?? env.MOAT_SOAK_CLIENTS, 6, 1)),
    keepers: Math.floor(count("keepers", flag("keepers") ?? env.MOAT_SOAK_KEEPERS, 2, 0)),
    poolSize: Math.floor(count("pool size", flag("pool-size") ?? env.MOAT_SOAK_POOL_SIZE, 2, 0)),
    fork: fork as SoakConfig["fork"],
  };
}

const BASELINE_MS = 60_000;
const SAMPLE_EVERY_MS = 5_000;
const PROGRESS_EVERY_MS = 30_000;
/** An operation that has not answered by then counts as a hang (the soak goes on without it). */
const OP_DEADLINE_MS: Record<Op, number> = {
  create: 120_000,
  command: 60_000,
  write: 120_000,
  read: 120_000,
  verify: 120_000,
  pause: 180_000,
  resume: 180_000,
  reconnect: 180_000,
  kill: 120_000,
  fork: 180_000,
  "process check": 60_000,
};
/** After the workload's time is up: how long lives in progress may take to end. */
const DRAIN_MS = 8 * 60_000;
const CLIENT_TTL_MS = 15 * 60_000;
const DIR = "/home/user/soak";
/** Per keeper: files kept at most (then writes overwrite old ones), so the disk stays bounded. */
const KEEPER_MAX_FILES = 24;

type Op =
  | "create"
  | "command"
  | "write"
  | "read"
  | "verify"
  | "pause"
  | "resume"
  | "reconnect"
  | "kill"
  | "fork"
  | "process check";

/** A check inside an operation failed: the operation answered, but not with what it should. */
class Wrong extends Error {
  constructor(
    readonly kind: string,
    message: string,
  ) {
    super(message);
    this.name = "Wrong";
  }
}

class Hang extends Error {
  constructor(op: Op, ms: number) {
    super(`${op} did not answer in ${ms / 1000} s`);
    this.name = "Hang";
  }
}

/** Error classes: the SDK's error name and its message with ids and numbers blanked out. */
function classify(err: unknown): string {
  if (err instanceof Hang) return "hang (no answer before the soak's deadline)";
  if (err instanceof Wrong) return `wrong result: ${err.kind}`;
  const e = err instanceof Error ? err : new Error(String(err));
  const message = e.message
    .replace(/\b[a-z0-9]{16,}\b/g, "<id>")
    .replace(/\d+/g, "N")
    .replace(/\s+/g, " ")
    .slice(0, 140);
  return `${e.name}: ${message}`;
}

interface OpSample {
  op: Op;
  /** ms since the workload started, when the operation began. */
  at: number;
  ms: number;
  error?: string;
}

/** Times every operation, bounds it by a deadline, and counts its errors by class. */
class Recorder {
  readonly samples: OpSample[] = [];
  readonly examples = new Map<string, string>();
  readonly inFlight = new Map<number, { op: Op; since: number; sandbox?: string }>();
  private nextId = 0;
  constructor(readonly started: number) {}

  async run<T>(op: Op, sandbox: string | undefined, fn: () => Promise<T>): Promise<T> {
    const id = this.nextId++;
    const begin = performance.now();
    this.inFlight.set(id, { op, since: begin, sandbox });
    let timer: NodeJS.Timeout | undefined;
    try {
      const deadline = new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Hang(op, OP_DEADLINE_MS[op])), OP_DEADLINE_MS[op]).unref();
      });
      const value = await Promise.race([fn(), deadline]);
      this.samples.push({ op, at: begin - this.started, ms: performance.now() - begin });
      return value;
    } catch (err) {
      const error = classify(err);
      this.samples.push({ op, at: begin - this.started, ms: performance.now() - begin, error });
      const key = `${op}|${error}`;
      if (!this.examples.has(key)) {
        const text = err instanceof Error ? `${err.message}` : String(err);
        this.examples.set(key, `${sandbox ?? "-"}: ${text.slice(0, 400)}`);
      }
      throw err;
    } finally {
      clearTimeout(timer);
      this.inFlight.delete(id);
    }
  }

  oldestInFlight(): string | undefined {
    let oldest: { op: Op; since: number; sandbox?: string } | undefined;
    for (const f of this.inFlight.values()) if (!oldest || f.since < oldest.since) oldest = f;
    if (!oldest) return undefined;
    return `${oldest.op} of ${oldest.sandbox ?? "-"} for ${((performance.now() - oldest.since) / 1000).toFixed(0)} s`;
  }
}

/** A sandbox of the soak and the files it must still hold (path → sha256). */
interface Tracked {
  id: string;
  sbx: Sandbox;
  role: "client" | "keeper" | "fork";
  files: Map<string, string>;
  killed: boolean;
  /** Writes so far (names new files). */
  writes: number;
  /** A kill was asked for (even if its answer was an error): a sandbox gone then lost nothing. */
  killRequested: boolean;
  /** The keeper's background process, which must outlive every pause. */
  tickerPid?: number;
}

interface LostFile {
  sandbox: string;
  path: string;
  reason: string;
}

const sha256 = (data: Uint8Array) => createHash("sha256").update(data).digest("hex");
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
/** Resolves with `value` after `ms` without keeping the process alive (for races with a deadline). */
const resolveAfter = <T>(ms: number, value: T) =>
  new Promise<T>((r) => setTimeout(() => r(value), ms).unref());
const pick = <T>(xs: T[]): T => xs[randomInt(xs.length)]!;

/** File sizes: empty and tiny, small, medium and a few large (up to 4 MiB). */
function randomSize(): number {
  const r = Math.random();
  if (r < 0.05) return 0;
  if (r < 0.2) return randomInt(1, 128);
  if (r < 0.6) return randomInt(128, 16 * 1024);
  if (r < 0.92) return randomInt(16 * 1024, 512 * 1024);
  return randomInt(512 * 1024, 4 * 1024 * 1024);
}

class Soak {
  readonly rec: Recorder;
  readonly live = new Set<Tracked>();
  readonly lost: LostFile[] = [];
  stopping = false;
  bytesWritten = 0;
  bytesRead = 0;
  lives = 0;
  /** Keepers' background processes that did not survive. */
  lostProcesses = 0;
  /** The Sandbox.connect part of each resume. */
  readonly connectMs: number[] = [];
  pauseCycles = 0;
  forks = 0;

  constructor(
    readonly config: SoakConfig,
    readonly forkEnabled: boolean,
    started: number,
  ) {
    this.rec = new Recorder(started);
  }

  private loseFile(t: Tracked, file: string, reason: string): void {
    this.lost.push({ sandbox: t.id, path: file, reason });
    t.files.delete(file);
    console.error(`  LOST ${t.id}:${file}: ${reason}`);
  }

  async create(role: Tracked["role"], timeoutMs: number): Promise<Tracked> {
    const sbx = await this.rec.run("create", undefined, async () => {
      const s = await Sandbox.create("base", { timeoutMs });
      // Created means usable: the first command is part of the create, as for TTI.
      await s.commands.run("true");
      return s;
    });
    const t: Tracked = {
      id: sbx.sandboxId,
      sbx,
      role,
      files: new Map(),
      killed: false,
      killRequested: false,
      writes: 0,
    };
    this.live.add(t);
    await this.command(t, `mkdir -p ${DIR} && hostname`, (out) => out.trim() === t.id, "hostname is the id");
    return t;
  }

  /** Runs `cmd`, which must exit 0 with output passing `check` (or exit with `exitCode`). */
  async command(
    t: Tracked,
    cmd: string,
    check: (stdout: string) => boolean,
    what: string,
    exitCode = 0,
  ): Promise<string> {
    return this.rec.run("command", t.id, async () => {
      let stdout: string;
      try {
        stdout = (await t.sbx.commands.run(cmd)).stdout;
        if (exitCode !== 0) throw new Wrong("exit code", `${what}: exited 0, expected ${exitCode}`);
      } catch (err) {
        if (!(err instanceof CommandExitError) || err.exitCode !== exitCode) throw err;
        stdout = err.stdout;
      }
      if (!check(stdout))
        throw new Wrong("command output", `${what}: got ${JSON.stringify(stdout.slice(0, 200))}`);
      return stdout;
    });
  }

  /** A few commands whose output is known. */
  async commands(t: Tracked): Promise<void> {
    const nonce = randomBytes(8).toString("hex");
    await this.command(t, `echo ${nonce}`, (out) => out.trim() === nonce, "echo");
    const n = randomInt(1000, 100_000);
    const sum = String((n * (n - 1)) / 2);
    await this.command(t, `python3 -c 'print(sum(range(${n})))'`, (out) => out.trim() === sum, "python sum");
    await this.command(t, "echo out; echo err >&2; exit 3", (out) => out.trim() === "out", "exit code 3", 3);
  }

  private nextPath(t: Tracked, max = Infinity): string {
    // Past `max` files, or now and then, an existing file is overwritten.
    if (t.files.size > 0 && (t.files.size >= max || Math.random() < 0.15)) return pick([...t.files.keys()]);
    return `${DIR}/f${t.writes}.bin`;
  }

  /** One file written through the SDK (or, one time in four, by a process in the sandbox). */
  async writeFile(t: Tracked, max = Infinity): Promise<void> {
    const file = this.nextPath(t, max);
    t.writes++;
    const size = randomSize();
    // Until the write answers, the file's content is unknown: it is not expected meanwhile.
    t.files.delete(file);
    if (Math.random() < 0.25) {
      const out = await this.command(
        t,
        `head -c ${size} /dev/urandom > ${file} && sha256sum ${file}`,
        (o) => /^[0-9a-f]{64} /.test(o),
        "write from a process",
      );
      t.files.set(file, out.slice(0, 64));
    } else {
      const data = randomBytes(size);
      await this.rec.run("write", t.id, () =>
        t.sbx.files.write(
          file,
          data.buffer.slice(data.byteOffset, data.byteOffset + data.length) as ArrayBuffer,
        ),
      );
      t.files.set(file, sha256(data));
    }
    this.bytesWritten += size;
  }

  /** One file read back through the SDK and compared by hash. */
  async readBack(t: Tracked): Promise<void> {
    if (t.files.size === 0) return;
    const file = pick([...t.files.keys()]);
    const expected = t.files.get(file)!;
    await this.rec.run("read", t.id, async () => {
      const data = await t.sbx.files.read(file, { format: "bytes" });
      this.bytesRead += data.length;
      if (sha256(data) !== expected) {
        this.loseFile(t, file, `read back with other content (${data.length} bytes)`);
        throw new Wrong("file content", `${file} read back with other content`);
      }
    });
  }

  /** Every file the sandbox must hold, hashed inside it. Missing or changed files are lost. */
  async verifyAll(t: Tracked): Promise<void> {
    await this.rec.run("verify", t.id, async () => {
      // A missing directory or an unreadable file shows as missing files, not as a failed command.
      const res = await t.sbx.commands.run(`find ${DIR} -type f -exec sha256sum {} + 2>&1; true`);
      const seen = new Map<string, string>();
      for (const line of res.stdout.split("\n")) {
        const m = /^([0-9a-f]{64}) {2}(.+)$/.exec(line);
        if (m) seen.set(m[2]!, m[1]!);
      }
      let lost = 0;
      for (const [file, hash] of [...t.files]) {
        const got = seen.get(file);
        if (got === hash) continue;
        this.loseFile(t, file, got ? "other content" : "missing");
        lost++;
      }
      if (lost > 0) throw new Wrong("files lost", `${lost} files missing or changed`);
    });
  }

  /** The keeper's background process still runs (it must outlive every pause). */
  async processAlive(t: Tracked): Promise<void> {
    const pid = t.tickerPid;
    if (pid === undefined) return;
    await this.rec.run("process check", t.id, async () => {
      const list = await t.sbx.commands.list();
      if (list.some((p) => p.pid === pid)) return;
      this.lostProcesses++;
      t.tickerPid = undefined;
      throw new Wrong("process gone", `the background process ${pid} is gone`);
    });
  }

  async pause(t: Tracked): Promise<void> {
    const paused = await this.rec.run("pause", t.id, () => t.sbx.pause());
    if (!paused) throw new Wrong("pause", "pause reported the sandbox already paused");
  }

  /** Connect (which resumes it) and a first command, as a client coming back would. */
  async resume(t: Tracked, op: "resume" | "reconnect" = "resume", timeoutMs = CLIENT_TTL_MS): Promise<void> {
    t.sbx = await this.rec.run(op, t.id, async () => {
      const begin = performance.now();
      const sbx = await Sandbox.connect(t.id, { timeoutMs });
      if (op === "resume") this.connectMs.push(performance.now() - begin);
      await sbx.commands.run("true");
      return sbx;
    });
    if (op === "resume") this.pauseCycles++;
  }

  async kill(t: Tracked): Promise<void> {
    t.killRequested = true;
    await this.rec.run("kill", t.id, () => Sandbox.kill(t.id));
    t.killed = true;
    t.files.clear();
    this.live.delete(t);
  }

  /**
   * Fork (POST /sandboxes/{id}/fork, `sbx.fork()` in the SDK), once moat has it: the fork must hold
   * every file of its parent, and what it writes must stay its own. Used when the API's OpenAPI
   * document lists the route (or with MOAT_SOAK_FORK=on).
   */
  async forkStep(t: Tracked): Promise<void> {
    const [child] = await this.rec.run("fork", t.id, () =>
      t.sbx.fork({ count: 1, timeoutMs: CLIENT_TTL_MS }),
    );
    if (!child) throw new Wrong("fork", "fork answered without a sandbox");
    if (child instanceof Error) throw child;
    this.forks++;
    const fork: Tracked = {
      id: child.sandboxId,
      sbx: child,
      role: "fork",
      files: new Map(t.files),
      killed: false,
      killRequested: false,
      writes: t.writes + 1_000_000,
    };
    this.live.add(fork);
    await this.verifyAll(fork);
    await this.writeFile(fork);
    const own = [...fork.files.keys()].find((f) => !t.files.has(f));
    if (own) {
      await this.command(
        t,
        `test ! -e ${own} && echo absent`,
        (o) => o.trim() === "absent",
        "fork's file stays its own",
      );
    }
    await this.kill(fork);
  }

  /** A sandbox left in an unknown state by a failed step: resumed if it can be, checked, killed. */
  async salvage(t: Tracked): Promise<void> {
    try {
      await this.resume(t, "reconnect");
      await this.verifyAll(t);
      await this.kill(t);
    } catch {
      // Stays in `live`: the final check tries again and counts its files lost if it cannot.
    }
  }

  async client(): Promise<void> {
    while (!this.stopping) {
      let t: Tracked;
      try {
        t = await this.create("client", CLIENT_TTL_MS);
      } catch {
        await sleep(1000);
        continue;
      }
      this.lives++;
      try {
        const cycles = randomInt(1, 4);
        for (let c = 0; c < cycles && !this.stopping; c++) {
          await this.commands(t);
          for (let i = randomInt(1, 5); i > 0; i--) await this.writeFile(t);
          for (let i = randomInt(1, 3); i > 0; i--) await this.readBack(t);
          if (this.forkEnabled && Math.random() < 0.25) await this.forkStep(t);
          await this.pause(t);
          await sleep(randomInt(0, 1500));
          await this.resume(t);
          await this.verifyAll(t);
          await this.readBack(t);
        }
        await this.kill(t);
      } catch {
        await this.salvage(t);
      }
    }
  }

  async keeper(): Promise<void> {
    const ttl = (this.config.minutes + 20) * 60_000;
    while (!this.stopping) {
      let t: Tracked;
      try {
        t = await this.create("keeper", ttl);
        const ticker = await this.rec.run("command", t.id, () =>
          // timeoutMs 0: a background command's time limit (60 s by default) would end it.
          t.sbx.commands.run(`sh -c 'while :; do date +%s%N > ${DIR}/../tick; sleep 1; done'`, {
            background: true,
            timeoutMs: 0,
          }),
        );
        t.tickerPid = ticker.pid;
      } catch {
        await sleep(1000);
        continue;
      }
      let failures = 0;
      while (!this.stopping && failures < 3) {
        try {
          for (let i = randomInt(1, 3); i > 0; i--) await this.writeFile(t, KEEPER_MAX_FILES);
          await this.pause(t);
          await sleep(randomInt(0, 3000));
          await this.resume(t, "resume", ttl);
          await this.verifyAll(t);
          await this.processAlive(t);
          await this.readBack(t);
          failures = 0;
        } catch {
          failures++;
          await this.resume(t, "reconnect", ttl).catch(() => undefined);
        }
      }
      // A keeper that kept failing is left for the final check; a new one takes its place.
    }
  }

  /** Every sandbox not killed: resumed, each file checked by hash, then killed. */
  async finalCheck(): Promise<void> {
    for (const t of [...this.live]) {
      let lastError: unknown;
      for (let attempt = 0; attempt < 3 && !t.killed; attempt++) {
        try {
          await this.resume(t, "reconnect");
          await this.verifyAll(t);
          await this.processAlive(t).catch(() => undefined);
          await this.kill(t);
        } catch (err) {
          lastError = err;
          // Files found lost are already counted: the attempts that follow check what remains.
          await sleep(2000);
        }
      }
      if (!t.killed) {
        // A kill whose answer was an error may still have killed it: not found then is no loss.
        const goneAfterKill = t.killRequested && lastError instanceof NotFoundError;
        if (!goneAfterKill) {
          for (const file of [...t.files.keys()])
            this.loseFile(t, file, `sandbox unreachable at the end: ${classify(lastError)}`);
        }
        await Sandbox.kill(t.id).catch(() => undefined);
        this.live.delete(t);
      }
    }
  }
}

interface UsageSample {
  at: number;
  rssMB: number;
  fds: number;
  cpuSeconds: number;
  /** The host's 1-minute load average: latencies mean little without it. */
  load: number;
}

/** RSS and fds of moat, and every process it starts (to find those that outlive it). */
class Watcher {
  readonly usage: UsageSample[] = [];
  readonly children = new Map<string, ProcessInfo>();
  private timer?: NodeJS.Timeout;
  private busy = false;
  constructor(
    readonly pid: number,
    readonly started: number,
  ) {}

  start(): void {
    const tick = async () => {
      if (this.busy) return;
      this.busy = true;
      try {
        const u = await processUsage(this.pid);
        const load = Number((await readFile("/proc/loadavg", "utf8")).split(" ")[0]);
        if (u) this.usage.push({ at: performance.now() - this.started, ...u, load });
        for (const p of descendants(await processes(), this.pid)) this.children.set(`${p.pid}:${p.start}`, p);
      } finally {
        this.busy = false;
      }
    };
    void tick();
    this.timer = setInterval(() => void tick(), SAMPLE_EVERY_MS);
  }

  stop(): void {
    clearInterval(this.timer);
  }

  /** moat's children still running (same pid and start time) once moat has exited. */
  async survivors(): Promise<string[]> {
    const now = new Map((await processes()).map((p) => [`${p.pid}:${p.start}`, p]));
    return [...this.children.keys()].filter((k) => now.has(k)).map((k) => describe(now.get(k)!));
  }
}

async function apiHasFork(moat: RunningMoat): Promise<boolean> {
  try {
    const res = await fetch(`${moat.env.E2B_API_URL}/openapi.json`, { signal: AbortSignal.timeout(10_000) });
    const doc = (await res.json()) as { paths?: Record<string, unknown> };
    return Object.keys(doc.paths ?? {}).some((p) => /^\/sandboxes\/\{[^}]+\}\/fork$/.test(p));
  } catch {
    return false;
  }
}

const fmt = (x: number, digits = 1) => (Number.isFinite(x) ? x.toFixed(digits) : "n/a");
const summarizeOrNaN = (xs: number[]): Summary =>
  xs.length > 0 ? summarize(xs) : { n: 0, median: NaN, p99: NaN, min: NaN, max: NaN };

export async function benchSoak(argv: string[] = process.argv.slice(2)): Promise<Figure[]> {
  const config = soakConfig(argv, process.env);
  const t0 = performance.now();
  const log = (line: string) =>
    console.error(`  [${((performance.now() - t0) / 1000).toFixed(0)} s] ${line}`);
  log(
    `soak: ${config.minutes} min, ${config.clients} clients, ${config.keepers} keepers, warm pool ${config.poolSize}`,
  );

  const before = await pictureHost();
  const moat = await startMoat({ env: { ...BENCH_QUOTAS, MOAT_POOL_SIZE: String(config.poolSize) } });
  const pid = moat.child.pid!;
  const started = performance.now();
  const watcher = new Watcher(pid, started);
  let soak: Soak | undefined;
  let workloadMs = 0;
  let drainHang: string | undefined;
  const leftInAPI: string[] = [];
  let failure: unknown;
  try {
    useMoat(moat);
    const forkEnabled = config.fork === "on" || (config.fork === "auto" && (await apiHasFork(moat)));
    log(`moat up (pid ${pid}); forks ${forkEnabled ? "on" : "off (the API has no fork route)"}`);
    const s = new Soak(config, forkEnabled, started);
    soak = s;
    watcher.start();
    const progress = setInterval(() => {
      const u = watcher.usage.at(-1);
      const oldest = s.rec.oldestInFlight();
      log(
        `${s.rec.samples.length} ops, ${s.rec.samples.filter((x) => x.error).length} errors, ${s.lives} lives, ` +
          `${s.pauseCycles} pause cycles, ${s.live.size} sandboxes, ${s.lost.length} lost files, ` +
          `moat RSS ${fmt(u?.rssMB ?? NaN)} MB, ${u?.fds ?? "?"} fds${oldest ? `; oldest in flight: ${oldest}` : ""}`,
      );
    }, PROGRESS_EVERY_MS);
    try {
      const workers = [
        ...Array.from({ length: config.clients }, () => s.client()),
        ...Array.from({ length: config.keepers }, () => s.keeper()),
      ];
      await sleep(config.minutes * 60_000);
      s.stopping = true;
      workloadMs = performance.now() - started;
      log("time is up: lives in progress end, then every sandbox left is checked and killed");
      const drained = await Promise.race([
        Promise.all(workers).then(() => true),
        resolveAfter(DRAIN_MS, false),
      ]);
      if (!drained) {
        drainHang = `workers still busy ${DRAIN_MS / 60_000} min after the end: ${s.rec.oldestInFlight()}`;
        log(`HANG: ${drainHang}`);
      }
      await s.finalCheck();
    } finally {
      clearInterval(progress);
    }
    // Nothing of the soak's should be left in the API's view.
    for (const state of ["running", "paused"] as const) {
      const left = await Sandbox.list({ query: { state: [state] } })
        .nextItems()
        .catch(() => []);
      for (const sbx of left) {
        leftInAPI.push(`${sbx.sandboxId} (${state})`);
        await Sandbox.kill(sbx.sandboxId).catch(() => undefined);
      }
    }
  } catch (err) {
    failure = err;
  }
  watcher.stop();
  log("stopping moat (Ctrl-C)");
  const stopped = await stopMoat(moat);
  const out = path.resolve(".bench/soak-moat.log");
  await mkdir(path.dirname(out), { recursive: true });
  await writeFile(out, moat.log());
  if (failure !== undefined || !soak) {
    await removeDataDir(moat.dataDir);
    console.error(`soak failed; the moat up log is in ${out}`);
    throw failure;
  }
  // Give the kernel a moment for what it still tears down (namespaces of exited processes).
  await sleep(2000);
  const after = await pictureHost(moat.dataDir);
  const noDataDir: HostPicture = {
    "runsc containers": [],
    "sandbox directories": [],
    "processes naming the data directory": [],
  };
  const leaks = diffPictures({ ...before, ...noDataDir }, after);
  const survivors = await watcher.survivors();
  if (survivors.length > 0) leaks["processes moat started"] = survivors;
  if (leftInAPI.length > 0) leaks["sandboxes the API still listed after they were killed"] = leftInAPI;
  await removeDataDir(moat.dataDir);
  log(`moat log: ${out}`);
  return report(config, soak, watcher, { workloadMs, leaks, stopped, drainHang });
}

/** Ctrl-C, as a user stops it; a moat that has not exited two minutes later is killed. */
async function stopMoat(moat: RunningMoat): Promise<{ ok: boolean; ms: number; exit: string }> {
  const begin = performance.now();
  const exited = moat.stop().then(() => true);
  const ok = await Promise.race([exited, resolveAfter(120_000, false)]);
  if (!ok) {
    moat.child.kill("SIGKILL");
    await exited;
  }
  return { ok, ms: performance.now() - begin, exit: String(moat.child.exitCode ?? moat.child.signalCode) };
}

async function report(
  config: SoakConfig,
  soak: Soak,
  watcher: Watcher,
  end: {
    workloadMs: number;
    leaks: Record<string, string[]>;
    stopped: { ok: boolean; ms: number; exit: string };
    drainHang?: string;
  },
): Promise<Figure[]> {
  const samples = soak.rec.samples;
  const ops = [...new Set(samples.map((s) => s.op))];
  const lines: string[] = [];
  lines.push(
    `soak: ${fmt(end.workloadMs / 60_000)} min of workload, ${config.clients} clients, ${config.keepers} keepers, ` +
      `${soak.lives} client lives, ${soak.pauseCycles} pause/resume cycles, ${soak.forks} forks${soak.forkEnabled ? "" : " (fork: not in the API yet)"}, ` +
      `${(soak.bytesWritten / 2 ** 20).toFixed(0)} MiB written, ${(soak.bytesRead / 2 ** 20).toFixed(0)} MiB read back`,
  );
  const errorCount = samples.filter((s) => s.error).length;
  lines.push(
    `operations: ${samples.length}, errors ${errorCount} (${fmt((100 * errorCount) / Math.max(1, samples.length), 2)}%)`,
  );
  const opErrors: Record<string, { n: number; errors: number; classes: Record<string, number> }> = {};
  for (const op of ops) {
    const mine = samples.filter((s) => s.op === op);
    const classes: Record<string, number> = {};
    for (const s of mine) if (s.error) classes[s.error] = (classes[s.error] ?? 0) + 1;
    const errors = mine.filter((s) => s.error).length;
    opErrors[op] = { n: mine.length, errors, classes };
    const ok = summarizeOrNaN(mine.filter((s) => !s.error).map((s) => s.ms));
    lines.push(
      `  ${op}: ${mine.length}, errors ${errors} (${fmt((100 * errors) / Math.max(1, mine.length), 2)}%); ` +
        `median ${fmt(ok.median, 0)} ms, p99 ${fmt(ok.p99, 0)} ms, max ${fmt(ok.max, 0)} ms`,
    );
    for (const [cls, n] of Object.entries(classes).sort((a, b) => b[1] - a[1])) {
      lines.push(`    ${n} × ${cls}`);
      lines.push(`      e.g. ${soak.rec.examples.get(`${op}|${cls}`)}`);
    }
  }
  lines.push(`keepers' background processes gone after a resume: ${soak.lostProcesses}`);
  lines.push(`lost files: ${soak.lost.length}`);
  for (const l of soak.lost.slice(0, 20)) lines.push(`  ${l.sandbox}:${l.path}: ${l.reason}`);
  const leakCount = Object.values(end.leaks).reduce((n, xs) => n + xs.length, 0);
  lines.push(`leaks after moat stopped (host compared with before it started): ${leakCount}`);
  for (const [category, items] of Object.entries(end.leaks)) {
    lines.push(`  ${category}: ${items.length}`);
    for (const item of items.slice(0, 10)) lines.push(`    ${item}`);
  }
  lines.push(
    `moat stop (Ctrl-C): ${end.stopped.ok ? "exited" : "HUNG, killed"} after ${fmt(end.stopped.ms / 1000)} s (${end.stopped.exit})`,
  );
  if (end.drainHang) lines.push(`HANG: ${end.drainHang}`);

  // Memory. The first minutes hold start-up garbage (the embedded database's first start leaves
  // a few hundred MB that the next major GC frees), so the trend is judged on the second half of
  // the workload; the slope after the first minute is shown beside it.
  const usage = watcher.usage.filter((u) => u.at <= end.workloadMs);
  const steady = usage.filter((u) => u.at > BASELINE_MS);
  const secondHalf = usage.filter((u) => u.at > end.workloadMs / 2);
  const perMin = (xs: UsageSample[], key: "rssMB" | "fds") =>
    slope(xs.map((u) => ({ x: u.at / 60_000, y: u[key] })));
  const rssSlope = perMin(steady, "rssMB");
  const lateSlope = perMin(secondHalf, "rssMB");
  const fdSlope = perMin(steady, "fds");
  const lateFdSlope = perMin(secondHalf, "fds");
  const first = usage[0];
  const last = usage.at(-1);
  const atBaseline = usage.filter((u) => u.at <= BASELINE_MS).at(-1);
  const lateMinutes = secondHalf.length > 1 ? (secondHalf.at(-1)!.at - secondHalf[0]!.at) / 60_000 : 0;
  const growth = lateSlope * lateMinutes;
  const steadyMin = Math.min(...steady.map((u) => u.rssMB));
  const memoryFlat = !Number.isFinite(growth) || growth < Math.max(20, 0.05 * steadyMin);
  const rssLine =
    `moat RSS: start ${fmt(first?.rssMB ?? NaN)} MB, after 1 min ${fmt(atBaseline?.rssMB ?? NaN)} MB, ` +
    `end ${fmt(last?.rssMB ?? NaN)} MB, min after the first minute ${fmt(steadyMin)} MB, max ${fmt(Math.max(...usage.map((u) => u.rssMB)))} MB; ` +
    `slope after the first minute ${fmt(rssSlope, 2)} MB/min, over the second half ${fmt(lateSlope, 2)} MB/min ` +
    `(${fmt(growth)} MB over ${fmt(lateMinutes)} min): ${memoryFlat ? "flat" : "GROWING"}`;
  const fdLine =
    `moat open fds: start ${first?.fds ?? "?"}, after 1 min ${atBaseline?.fds ?? "?"}, end ${last?.fds ?? "?"}, ` +
    `max ${Math.max(...usage.map((u) => u.fds))}; slope after the first minute ${fmt(fdSlope, 2)} per min, ` +
    `over the second half ${fmt(lateFdSlope, 2)} per min`;
  lines.push(rssLine, fdLine);
  // RSS by stretch of the run, to see a trend by eye.
  const stretch = Math.max(60_000, Math.ceil(end.workloadMs / 10 / 60_000) * 60_000);
  const buckets: string[] = [];
  const cpu: string[] = [];
  const load: string[] = [];
  for (let from = 0; from < end.workloadMs; from += stretch) {
    const span = usage.filter((u) => u.at >= from && u.at < from + stretch);
    if (span.length === 0) continue;
    buckets.push(`${from / 60_000}′ ${fmt(summarize(span.map((u) => u.rssMB)).median, 0)}`);
    load.push(`${from / 60_000}′ ${fmt(summarize(span.map((u) => u.load)).median)}`);
    if (span.length > 1) {
      const used = span.at(-1)!.cpuSeconds - span[0]!.cpuSeconds;
      const wall = (span.at(-1)!.at - span[0]!.at) / 1000;
      cpu.push(`${from / 60_000}′ ${fmt((100 * used) / wall, 0)}%`);
    }
  }
  lines.push(`  RSS median by stretch (MB): ${buckets.join(", ")}`);
  // moat is one process (API, proxy, orchestrator): near 100% it is the bottleneck itself.
  lines.push(`  moat CPU by stretch (% of one core): ${cpu.join(", ")}`);
  lines.push(`  host load average by stretch (${cpus().length} CPUs): ${load.join(", ")}`);
  console.log(lines.join("\n"));

  const failed =
    soak.lost.length > 0 ||
    soak.lostProcesses > 0 ||
    leakCount > 0 ||
    !end.stopped.ok ||
    end.drainHang !== undefined;
  if (failed) {
    process.exitCode = 1;
    console.log("SOAK FAILED: lost files or processes, leaks or a hang (details above)");
  }

  const latency = (op: Op, label: string, notes?: string[]): Figure => {
    const ok = samples.filter((s) => s.op === op && !s.error);
    return {
      name: `soak: ${label} (after the first minute)`,
      unit: "ms",
      value: summarizeOrNaN(ok.filter((s) => s.at > BASELINE_MS).map((s) => s.ms)),
      baseline: {
        name: "same, first minute of the run",
        value: summarizeOrNaN(ok.filter((s) => s.at <= BASELINE_MS).map((s) => s.ms)),
      },
      notes,
    };
  };
  const connect = summarizeOrNaN(soak.connectMs);
  const figures: Figure[] = [
    latency("create", "create → first command (Sandbox.create + commands.run)"),
    latency("command", "command (commands.run)"),
    latency("write", "file write through the SDK (0 B – 4 MiB)"),
    latency("read", "file read through the SDK (0 B – 4 MiB)"),
    latency("pause", "pause (sbx.pause())"),
    latency("resume", "resume (Sandbox.connect → first command)", [
      `of which Sandbox.connect (whole run): median ${fmt(connect.median, 0)} ms, p99 ${fmt(connect.p99, 0)} ms`,
    ]),
    {
      name: "soak: moat RSS (after the first minute)",
      unit: "MB",
      value: summarizeOrNaN(steady.map((u) => u.rssMB)),
      baseline: {
        name: "first minute",
        value: summarizeOrNaN(usage.filter((u) => u.at <= BASELINE_MS).map((u) => u.rssMB)),
      },
      notes: [rssLine, fdLine],
    },
  ];
  await writeDetails({
    config,
    failed,
    workloadMinutes: end.workloadMs / 60_000,
    lives: soak.lives,
    pauseCycles: soak.pauseCycles,
    forks: soak.forks,
    bytesWritten: soak.bytesWritten,
    bytesRead: soak.bytesRead,
    operations: opErrors,
    errorExamples: Object.fromEntries(soak.rec.examples),
    lostFiles: soak.lost,
    lostProcesses: soak.lostProcesses,
    leaks: end.leaks,
    stop: end.stopped,
    drainHang: end.drainHang,
    samples,
    memory: {
      rssSlopeMBPerMin: rssSlope,
      rssSlopeSecondHalfMBPerMin: lateSlope,
      fdSlopePerMin: fdSlope,
      flat: memoryFlat,
      samples: usage,
    },
  });
  return figures;
}

async function writeDetails(details: unknown): Promise<void> {
  const out = path.resolve(".bench/soak.json");
  await mkdir(path.dirname(out), { recursive: true });
  await writeFile(out, `${JSON.stringify(details, null, 2)}\n`);
}
