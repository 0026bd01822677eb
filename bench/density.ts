/**
 * Density: `npm run bench -- density` (only when named). One `moat up` (warm pool off, template
 * snapshots on, disks as deployed) and, through the unmodified SDK, N idle sandboxes (`--n=N`,
 * default 200; `--concurrency=C` creates at once, default 4) created side by side, each then asked
 * one command. Prints the host's used memory (MemTotal − MemAvailable) delta / N with the
 * projection onto a 24 GiB node, what that memory is made of (meminfo deltas, PSS of the sentries
 * and gofers, envd's own memory inside one sandbox), the time to create them, and moat's own
 * memory (RSS of the `moat up` process tree, sandboxes excluded) beside the same with no sandbox;
 * first, envd's idle memory with its sandbox flags beside plain node (bench/envd-memory.ts).
 * Every sandbox is killed at the end, also when the run fails halfway.
 */
import { spawn } from "node:child_process";
import { once } from "node:events";
import { readdir, readFile } from "node:fs/promises";
import path from "node:path";
import { RateLimitError, Sandbox } from "e2b";
import type { RunningMoat } from "../tests/integration/helpers/moat-up.js";
import { CACHE_DIR } from "../tests/integration/helpers/orchestrator.js";
import { envdMemory } from "./envd-memory.js";
import { descendants, processes, processUsage } from "./host-state.js";
import { logEntries, phaseNote } from "./phases.js";
import { withMoat } from "./platform.js";
import { BENCH_QUOTAS } from "./quotas.js";
import type { Figure } from "./report.js";
import { summarize } from "./stats.js";

const MiB = 1024 * 1024;
/** The node the target speaks of. */
const NODE_GIB = 24;
/** moat up's node takes at most this many sandboxes (orchestrator default). */
const NODE_MAX_SANDBOXES = 1000;
/** Idle time before the memory is read: restored envds settle (GC, lazy pages) in a few seconds. */
const SETTLE_MS = 15_000;
/** Sandboxes live through the whole run (creating hundreds takes minutes on 2 cores). */
const SANDBOX_TIMEOUT_MS = 60 * 60_000;

export interface DensityConfig {
  n: number;
  concurrency: number;
}

/** `--n=N` and `--concurrency=C`, as the soak takes its options. */
export function densityConfig(argv: string[]): DensityConfig {
  const flag = (name: string) => argv.find((a) => a.startsWith(`--${name}=`))?.split("=")[1];
  const count = (name: string, fallback: number, max: number) => {
    const value = flag(name);
    if (value === undefined || value === "") return fallback;
    const n = Number(value);
    if (!Number.isInteger(n) || n < 1 || n > max)
      throw new Error(`density: --${name} must be a whole number from 1 to ${max}, not '${value}'`);
    return n;
  };
  return { n: count("n", 200, NODE_MAX_SANDBOXES), concurrency: count("concurrency", 4, 16) };
}

/** Host CPU time (seconds) of `pids` over `ms`, as a percentage of one core. */
async function cpuShare(pids: number[], ms: number): Promise<number> {
  const used = async () => {
    let sum = 0;
    for (const pid of pids) sum += (await processUsage(pid))?.cpuSeconds ?? 0;
    return sum;
  };
  const before = await used();
  const started = performance.now();
  await new Promise((r) => setTimeout(r, ms));
  return (((await used()) - before) / ((performance.now() - started) / 1000)) * 100;
}

const IDLE_CPU_WINDOW_MS = 10_000;

/**
 * The baseline of the idle CPU figure: one sandbox sleeping under the runsc binary moat started
 * from, unpatched (`runsc do`, no network), as a percentage of a core over IDLE_CPU_WINDOW_MS.
 */
async function stockIdleCpu(dataDir: string): Promise<{ share: number; binary: string } | undefined> {
  const runtime = path.join(dataDir, "runtime");
  const record = JSON.parse(await readFile(path.join(runtime, "runsc.json"), "utf8").catch(() => "{}")) as {
    origin?: string;
  };
  if (!record.origin) return undefined;
  const binary = path.resolve(runtime, record.origin);
  const child = spawn(binary, ["--network=none", "--platform=systrap", "do", "sleep", "60"], {
    stdio: "ignore",
  });
  try {
    await new Promise((r) => setTimeout(r, 3000));
    const pids = descendants(await processes(), child.pid!)
      .filter((p) => /^runsc-(sandbox|gofer) /.test(p.cmdline))
      .map((p) => p.pid);
    if (pids.length === 0) return undefined;
    return { share: await cpuShare(pids, IDLE_CPU_WINDOW_MS), binary };
  } finally {
    // `runsc do` stops and deletes its sandbox when it is signalled; one that failed has exited.
    if (child.exitCode === null && child.signalCode === null) {
      const exited = once(child, "exit");
      child.kill("SIGTERM");
      await exited;
    }
  }
}

/** /proc/meminfo in bytes. */
async function meminfo(): Promise<Map<string, number>> {
  return new Map(
    (await readFile("/proc/meminfo", "utf8"))
      .split("\n")
      .map((l) => /^(\w+):\s+(\d+)/.exec(l))
      .filter((m): m is RegExpExecArray => m !== null)
      .map((m) => [m[1]!, Number(m[2]) * 1024] as const),
  );
}

/** The parts of the host's memory a sandbox can add to, in bytes. */
interface HostMemory {
  used: number;
  /** gVisor's memory file (a memfd) is shared memory. */
  shmem: number;
  anon: number;
  /** Page cache without shared memory: file pages (rootfs reads through the gofer, images). */
  file: number;
  kernel: number;
}

async function hostMemory(): Promise<HostMemory> {
  const m = await meminfo();
  const get = (k: string) => m.get(k) ?? 0;
  return {
    used: get("MemTotal") - get("MemAvailable"),
    shmem: get("Shmem"),
    anon: get("AnonPages"),
    file: get("Cached") - get("Shmem") + get("Buffers"),
    kernel: get("Slab") + get("KernelStack") + get("PageTables"),
  };
}

/** Median of three reads a second apart (the metrics sampler and the page cache move a little). */
async function steadyMemory(): Promise<HostMemory> {
  const reads: HostMemory[] = [];
  for (let i = 0; i < 3; i++) {
    if (i > 0) await new Promise((r) => setTimeout(r, 1000));
    reads.push(await hostMemory());
  }
  const mid = (k: keyof HostMemory) => reads.map((r) => r[k]).sort((a, b) => a - b)[1]!;
  return {
    used: mid("used"),
    shmem: mid("shmem"),
    anon: mid("anon"),
    file: mid("file"),
    kernel: mid("kernel"),
  };
}

async function status(pid: number, key: string): Promise<number> {
  const text = await readFile(`/proc/${pid}/status`, "utf8").catch(() => "");
  return Number(new RegExp(`^${key}:\\s+(\\d+) kB`, "m").exec(text)?.[1] ?? 0) * 1024;
}

async function pss(pid: number): Promise<number> {
  const text = await readFile(`/proc/${pid}/smaps_rollup`, "utf8").catch(() => "");
  return Number(/^Pss:\s+(\d+) kB/m.exec(text)?.[1] ?? 0) * 1024;
}

/**
 * RSS of `moat up` and its children that are not sandboxes (runsc's processes), in bytes, and the
 * largest of them.
 */
async function moatRSS(moat: RunningMoat): Promise<{ total: number; top: string }> {
  const root = moat.child.pid!;
  const tree = descendants(await processes(), root).filter((p) => !p.cmdline.includes("runsc"));
  const each = [{ what: "moat up", rss: await status(root, "VmRSS") }];
  for (const p of tree) each.push({ what: p.cmdline.slice(0, 60), rss: await status(p.pid, "VmRSS") });
  each.sort((a, b) => b.rss - a.rss);
  return {
    total: each.reduce((sum, p) => sum + p.rss, 0),
    top: each
      .slice(0, 3)
      .map((p) => `${p.what} ${(p.rss / MiB).toFixed(0)} MB`)
      .join(", "),
  };
}

/** PSS of the node's runsc processes by kind (sentry, gofer, other), in bytes, and their counts. */
async function runscPSS(dataDir: string): Promise<Record<string, { pss: number; count: number }>> {
  const out: Record<string, { pss: number; count: number }> = {};
  for (const p of await processes()) {
    if (!p.cmdline.includes(dataDir) || !p.cmdline.includes("runsc")) continue;
    const kind = / boot /.test(p.cmdline) ? "sentry" : / gofer /.test(p.cmdline) ? "gofer" : "other";
    out[kind] ??= { pss: 0, count: 0 };
    const entry = out[kind]!;
    entry.pss += await pss(p.pid);
    entry.count++;
  }
  return out;
}

/** One cgroup memory.stat of a sandbox (v1: /sys/fs/cgroup/memory/moat/<container>), in bytes. */
async function cgroupStats(): Promise<Map<string, number>[]> {
  const root = "/sys/fs/cgroup/memory/moat";
  const out: Map<string, number>[] = [];
  for (const name of await readdir(root).catch(() => [] as string[])) {
    const text = await readFile(`${root}/${name}/memory.stat`, "utf8").catch(() => "");
    if (!text) continue;
    out.push(
      new Map(
        text
          .split("\n")
          .map((l) => l.split(" "))
          .filter((f) => f.length === 2)
          .map(([k, v]) => [k!, Number(v)] as const),
      ),
    );
  }
  return out;
}

/** envd's memory as gVisor accounts it, from inside one sandbox (VmRSS of its processes). */
async function insideView(sbx: Sandbox): Promise<string> {
  const script =
    "for d in /proc/[0-9]*; do printf '%s %s\\n' \"$(tr '\\0' ' ' < $d/cmdline | cut -c1-40)\" " +
    "\"$(grep VmRSS $d/status | tr -s ' ')\"; done; grep -E 'MemTotal|MemFree|^Cached|Shmem:|AnonPages' /proc/meminfo | tr -s ' ' | tr '\\n' ';'";
  const res = await sbx.commands.run(script, { user: "root" }).catch((err: unknown) => ({
    stdout: `(failed: ${err instanceof Error ? err.message : String(err)})`,
  }));
  return res.stdout.trim().replace(/\n/g, "; ");
}

async function createOne(refused: { n: number }): Promise<{ sandbox: Sandbox; ms: number }> {
  const started = performance.now();
  for (let tries = 0; ; tries++) {
    try {
      const sandbox = await Sandbox.create("base", { timeoutMs: SANDBOX_TIMEOUT_MS });
      return { sandbox, ms: performance.now() - started };
    } catch (err) {
      // The node refuses more than its starting limit at once; a client retries.
      if (!(err instanceof RateLimitError) || tries >= 200) throw err;
      refused.n++;
      await new Promise((r) => setTimeout(r, 200));
    }
  }
}

/** Runs `fn` over `items`, `concurrency` at a time; every item is tried, errors collected. */
async function pool<T>(items: T[], concurrency: number, fn: (item: T, i: number) => Promise<void>) {
  const errors: unknown[] = [];
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(concurrency, items.length) }, async () => {
      while (next < items.length) {
        const i = next++;
        await fn(items[i]!, i).catch((err: unknown) => errors.push(err));
      }
    }),
  );
  return errors;
}

const mb = (bytes: number) => bytes / MiB;
const fmt = (x: number) => x.toFixed(1);

export async function benchDensity(argv: string[] = process.argv.slice(2)): Promise<Figure[]> {
  const config = densityConfig(argv);
  // envd's own part, and what its flags cost, before any sandbox (host processes only).
  const envd = await envdMemory();
  const t0 = performance.now();
  const progress = (line: string) =>
    console.error(`  [${((performance.now() - t0) / 1000).toFixed(0)} s] ${line}`);
  progress("idle CPU of one sandbox under the stock runsc");
  const stock = await stockIdleCpu(CACHE_DIR);
  const hostBefore = await hostMemory();
  const env = {
    MOAT_POOL_SIZE: "0",
    // The team quota must not be what stops the run.
    MOAT_TEAM_MAX_SANDBOXES: String(Math.max(Number(BENCH_QUOTAS.MOAT_TEAM_MAX_SANDBOXES), config.n)),
  };
  return withMoat(env, async (moat) => {
    const sandboxes: Sandbox[] = [];
    try {
      // One create and kill first, so that the template's pages and moat's lazy parts are loaded
      // before the baseline, as on a node that has served before.
      const first = await createOne({ n: 0 });
      await first.sandbox.commands.run("true");
      await first.sandbox.kill();
      await new Promise((r) => setTimeout(r, 3000));
      const before = await steadyMemory();
      const moatBefore = await moatRSS(moat);

      progress(`creating ${config.n} sandboxes, ${config.concurrency} at a time`);
      const refused = { n: 0 };
      const createMs: number[] = [];
      const logStart = moat.log().length;
      const started = performance.now();
      const createErrors = await pool(
        Array.from({ length: config.n }, (_, i) => i),
        config.concurrency,
        async (_, i) => {
          const { sandbox, ms } = await createOne(refused);
          sandboxes.push(sandbox);
          createMs.push(ms);
          if ((i + 1) % 50 === 0) progress(`${sandboxes.length} created`);
        },
      );
      const totalMs = performance.now() - started;
      if (createErrors.length > 0) {
        throw new Error(
          `${createErrors.length} of ${config.n} creates failed; first: ${String(createErrors[0])}`,
        );
      }

      progress(`all created in ${(totalMs / 1000).toFixed(1)} s; idle for ${SETTLE_MS / 1000} s`);
      await new Promise((r) => setTimeout(r, SETTLE_MS));
      const idle = await steadyMemory();
      const moatIdle = await moatRSS(moat);
      const sandboxPids = (await processes())
        .filter((p) => p.cmdline.includes(moat.dataDir) && /^runsc-(sandbox|gofer) /.test(p.cmdline))
        .map((p) => p.pid);
      const idleCpu = await cpuShare(sandboxPids, IDLE_CPU_WINDOW_MS);
      const runsc = await runscPSS(moat.dataDir);
      const cgroups = await cgroupStats();
      const inside = await insideView(sandboxes[0]!);

      progress("one command in each");
      let wrong = 0;
      const commandErrors = await pool(sandboxes, 8, async (sbx) => {
        const res = await sbx.commands.run("echo ready");
        if (res.stdout.trim() !== "ready") wrong++;
      });
      const answered = sandboxes.length - commandErrors.length - wrong;
      const afterCommand = await steadyMemory();

      const n = sandboxes.length;
      const per = (a: HostMemory, b: HostMemory, k: keyof HostMemory) => mb(a[k] - b[k]) / n;
      const perSandbox = per(idle, before, "used");
      // The node's memory less what the host and moat hold without sandboxes.
      const projection = Math.floor((NODE_GIB * 1024 - mb(before.used)) / perSandbox);
      const cg = (key: string) =>
        cgroups.length > 0 ? mb(cgroups.reduce((s, c) => s + (c.get(key) ?? 0), 0) / cgroups.length) : NaN;
      const kinds = Object.entries(runsc)
        .map(([kind, v]) => `${kind} ${fmt(mb(v.pss) / v.count)} MB × ${v.count}`)
        .join(", ");

      if (answered < n) process.exitCode = 1;
      return [
        ...envd,
        {
          name: `host memory per idle sandbox, used-memory delta / N (N=${n})`,
          unit: "MB",
          value: summarize([perSandbox]),
          target: { median: 25 },
          notes: [
            `projection: ${projection} idle sandboxes on a ${NODE_GIB} GiB node (${fmt(mb(before.used))} MB used before them; target ≥ 500): ${projection >= 500 ? "met" : "MISSED"}`,
            `per sandbox: shmem (gVisor memory files) ${fmt(per(idle, before, "shmem"))}, anon ${fmt(per(idle, before, "anon"))}, file pages ${fmt(per(idle, before, "file"))}, kernel (slab, stacks, page tables) ${fmt(per(idle, before, "kernel"))} MB`,
            `PSS per process: ${kinds || "none found"}`,
            `sandbox cgroups (mean of ${cgroups.length}): rss ${fmt(cg("rss"))}, cache ${fmt(cg("cache"))}, shmem ${fmt(cg("shmem"))}, mapped_file ${fmt(cg("mapped_file"))} MB`,
            `inside one sandbox: ${inside.slice(0, 600)}`,
            `after one command in each: ${fmt(per(afterCommand, before, "used"))} MB per sandbox`,
            `host used before moat up ${fmt(mb(hostBefore.used))} MB; with moat up, before the sandboxes ${fmt(mb(before.used))} MB`,
            `${answered} of ${n} answered a command${answered < n ? ` — FAILED: ${commandErrors.length} errors, ${wrong} wrong outputs; first: ${String(commandErrors[0] ?? "wrong output")}` : ""}`,
          ],
        },
        {
          name: `host CPU per idle sandbox (its runsc processes over ${IDLE_CPU_WINDOW_MS / 1000} s, N=${n})`,
          unit: "% of a core",
          value: summarize([idleCpu / n]),
          ...(stock && {
            baseline: {
              name: "one sleeping sandbox under the stock runsc (unpatched)",
              value: summarize([stock.share]),
            },
          }),
          notes: [
            `all ${n}: ${fmt(idleCpu)}% of a core`,
            stock ? `stock binary: ${stock.binary}` : "no stock runsc found for the baseline",
          ],
        },
        {
          name: `time to create ${n} idle sandboxes, ${config.concurrency} at a time (per create)`,
          unit: "ms",
          value: summarize(createMs),
          notes: [
            `all ${n} in ${(totalMs / 1000).toFixed(1)} s (${fmt(n / (totalMs / 1000))} per second)`,
            ...[phaseNote(logEntries(moat.log(), "sandbox created", logStart))].filter(
              (l): l is string => !!l,
            ),
            ...(refused.n > 0 ? [`${refused.n} creates refused with 429 (node busy) and retried`] : []),
          ],
        },
        {
          name: `moat's own memory with ${n} idle sandboxes (RSS of moat up's process tree, sandboxes excluded)`,
          unit: "MB",
          value: summarize([mb(moatIdle.total)]),
          baseline: { name: "same, before the sandboxes", value: summarize([mb(moatBefore.total)]) },
          notes: [
            `${fmt((mb(moatIdle.total) - mb(moatBefore.total)) / n)} MB per sandbox`,
            `largest processes: ${moatIdle.top}`,
          ],
        },
      ];
    } finally {
      progress(`killing ${sandboxes.length} sandboxes`);
      await pool(sandboxes, 8, (sbx) => sbx.kill().then(() => undefined));
    }
  });
}
