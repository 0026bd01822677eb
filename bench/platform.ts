/**
 * Platform figures through the official SDK against `moat up`: create → first `commands.run`
 * returns (TTI) over sequential creates booted cold, restored from the template snapshot and taken
 * from the warm pool (one `moat up` each), over concurrent creates, the command round trip through
 * the client proxy, and pause and resume through the API; beside the bare runtime's start,
 * checkpoint and restore and the direct envd round trip, measured in the same run.
 */
import { mkdir, writeFile } from "node:fs/promises";
import path from "node:path";
import { type Client, createClient } from "@connectrpc/connect";
import { SandboxService } from "@moat/shared/gen/orchestrator";
import { RateLimitError, Sandbox } from "e2b";
import { type RunningMoat, startMoat, useMoat } from "../tests/integration/helpers/moat-up.js";
import { nodeTransport } from "../tests/integration/helpers/orchestrator.js";
import { BareCheckpointRestore, bareRuntimeStarts } from "./orchestrator.js";
import { kindNote, logEntries, phaseNote } from "./phases.js";
import { BENCH_QUOTAS } from "./quotas.js";
import type { Figure } from "./report.js";
import { type Summary, sample, summarize } from "./stats.js";

const SEQUENTIAL = 20;
const CONCURRENT = 20;
/** Warm pool size of the pool run (the create waits until it is full again each time). */
const POOL_SIZE = 2;
const PAUSE_CYCLES = 15;
/** How long a create waits for the pool to be refilled before it goes ahead anyway. */
const POOL_REFILL_TIMEOUT_MS = 60_000;

/**
 * Create → first command returns. A create the API refuses with 429 (node busy: too many starts at
 * once) is retried after 100 ms, as a client would, inside the measured time; `refused` counts them.
 */
async function tti(): Promise<{ ms: number; sandbox: Sandbox; refused: number }> {
  const started = performance.now();
  let refused = 0;
  for (;;) {
    try {
      const sandbox = await Sandbox.create("base");
      await sandbox.commands.run("true");
      return { ms: performance.now() - started, sandbox, refused };
    } catch (err) {
      if (!(err instanceof RateLimitError) || refused >= 50) throw err;
      refused++;
      await new Promise((r) => setTimeout(r, 100));
    }
  }
}

/** The node's own view of the sandboxes behind the API (their start kinds). */
const nodeClients = new WeakMap<RunningMoat, Client<typeof SandboxService>>();
function nodeOf(moat: RunningMoat): Client<typeof SandboxService> {
  let client = nodeClients.get(moat);
  if (!client) {
    client = createClient(SandboxService, nodeTransport(moat.orchestratorPort, moat.nodeToken));
    nodeClients.set(moat, client);
  }
  return client;
}

export async function startKind(moat: RunningMoat, sandboxId: string): Promise<string> {
  try {
    const res = await nodeOf(moat).get({ sandboxId });
    return res.sandbox?.startKind ?? "?";
  } catch {
    return "?";
  }
}

let benchStart = performance.now();
function progress(what: string): void {
  console.error(`  [${((performance.now() - benchStart) / 1000).toFixed(0)} s] ${what}`);
}

/** A figure whose every sample failed still prints (as NaN, MISSED) with its failures. */
function summarizeOrNaN(samples: number[]): Summary {
  return samples.length > 0 ? summarize(samples) : { n: 0, median: NaN, p99: NaN, min: NaN, max: NaN };
}

function errorLine(err: unknown): string {
  return (err instanceof Error ? `${err.name}: ${err.message}` : String(err)).slice(0, 300);
}

/** A `moat up` with `env` for the length of `fn`, stopped and removed after. */
export async function withMoat<T>(
  env: Record<string, string>,
  fn: (moat: RunningMoat) => Promise<T>,
): Promise<T> {
  progress(
    `moat up ${Object.entries(env)
      .map(([k, v]) => `${k}=${v}`)
      .join(" ")}`,
  );
  const moat = await startMoat({ env: { ...BENCH_QUOTAS, ...env } });
  try {
    useMoat(moat);
    return await fn(moat);
  } catch (err) {
    // What the node and the API said about it.
    const file = path.resolve(".bench/moat-up-failed.log");
    await mkdir(path.dirname(file), { recursive: true });
    await writeFile(file, moat.log());
    console.error(`bench failed; the moat up log is in ${file}`);
    throw err;
  } finally {
    await moat.cleanup();
  }
}

/** The SDK on a sandbox straight at its host address (no proxy), from the API's routing catalog. */
export async function straightTo(moat: RunningMoat, sandboxId: string): Promise<Sandbox> {
  const res = await fetch(`${moat.env.E2B_API_URL}/internal/catalog/${sandboxId}`, {
    headers: { "x-admin-token": moat.env.MOAT_ADMIN_TOKEN! },
  });
  const entry = (await res.json()) as { hostAddress: string; envdAccessToken?: string };
  return new Sandbox({
    sandboxId,
    envdVersion: "0.6.13",
    envdAccessToken: entry.envdAccessToken,
    sandboxUrl: `http://${entry.hostAddress}:49983`,
    apiKey: moat.env.E2B_API_KEY,
  });
}

export interface Sequential {
  samples: number[];
  kinds: string[];
  /** The node's phase medians of the measured creates. */
  phases: string | undefined;
}

/**
 * `SEQUENTIAL` creates one after the other (after one unmeasured), each killed before the next;
 * `beforeEach` runs before every create, outside the measurement.
 */
export async function sequentialTTI(
  moat: RunningMoat,
  beforeEach?: () => Promise<void>,
): Promise<Sequential> {
  progress("sequential creates");
  const samples: number[] = [];
  const kinds: string[] = [];
  let logStart = 0;
  for (let i = -1; i < SEQUENTIAL; i++) {
    await beforeEach?.();
    if (i === 0) logStart = moat.log().length;
    const { ms, sandbox, refused } = await tti();
    if (refused > 0) throw new Error("a sequential create was refused with 429");
    if (i >= 0) {
      samples.push(ms);
      kinds.push(await startKind(moat, sandbox.sandboxId));
    }
    await sandbox.kill();
  }
  const created = logEntries(moat.log(), "sandbox created", logStart);
  return { samples, kinds, phases: phaseNote(created) };
}

/** Waits until the log has said "warm pool full" `count` times (or the timeout passed). */
export async function poolFull(moat: RunningMoat, count: number): Promise<boolean> {
  const deadline = Date.now() + POOL_REFILL_TIMEOUT_MS;
  while (logEntries(moat.log(), "warm pool full").length < count) {
    if (Date.now() > deadline) return false;
    await new Promise((r) => setTimeout(r, 10));
  }
  return true;
}

export async function benchPlatform(): Promise<Figure[]> {
  benchStart = performance.now();
  progress("bare runsc starts, checkpoints and restores");
  const bare = summarize(await bareRuntimeStarts(10));
  const bareStart = { name: "bare runsc start of a Node HTTP server", value: bare };
  const bareCR = await BareCheckpointRestore.sample(10);

  // Cold boots only.
  const cold = await withMoat({ MOAT_TEMPLATE_SNAPSHOTS: "off" }, (moat) => sequentialTTI(moat));

  // From the template snapshot, pool off: sequential and concurrent creates, the round trip, pause
  // and resume.
  const snap = await withMoat({ MOAT_POOL_SIZE: "0" }, async (moat) => {
    const sequential = await sequentialTTI(moat);

    progress("concurrent creates");
    const concurrent = await Promise.all(Array.from({ length: CONCURRENT }, () => tti()));
    const concurrentKinds = await Promise.all(concurrent.map((c) => startKind(moat, c.sandbox.sandboxId)));
    await Promise.all(concurrent.map((c) => c.sandbox.kill()));

    const sbx = await Sandbox.create("base");
    const proxied = await sample(100, () => sbx.commands.run("true"));
    const direct = await straightTo(moat, sbx.sandboxId);
    const directRT = await sample(100, () => direct.commands.run("true"));
    progress("a command's start inside the sandbox, with and without fork");
    const spawns = await spawnInside(sbx);

    // Pause and resume through the API: sbx.pause(), then Sandbox.connect and a first command.
    progress("pause and resume");
    const pause: number[] = [];
    const resume: number[] = [];
    const failures: string[] = [];
    let logStart = moat.log().length;
    let current = sbx;
    try {
      for (let i = -2; i < PAUSE_CYCLES && failures.length < 3; i++) {
        if (i === 0) logStart = moat.log().length;
        try {
          let started = performance.now();
          await current.pause();
          const paused = performance.now() - started;
          started = performance.now();
          const again = await Sandbox.connect(current.sandboxId);
          await again.commands.run("true");
          if (i >= 0) {
            pause.push(paused);
            resume.push(performance.now() - started);
          }
        } catch (err) {
          // Reported beside the figure; the cycles go on with a new sandbox.
          failures.push(errorLine(err));
          await Sandbox.kill(current.sandboxId).catch(() => undefined);
          current = await Sandbox.create("base");
        }
      }
    } finally {
      await Sandbox.kill(current.sandboxId).catch(() => undefined);
    }
    const log = moat.log();
    return {
      sequential,
      concurrent: concurrent.map((c) => c.ms),
      concurrentKinds,
      concurrentRefused: concurrent.reduce((n, c) => n + c.refused, 0),
      proxied,
      directRT,
      spawns,
      pause,
      resume,
      pauseFailures: failures,
      pausePhases: phaseNote(logEntries(log, "sandbox paused", logStart)),
      resumePhases: phaseNote(logEntries(log, "sandbox resumed", logStart)),
    };
  });

  // From the warm pool: each create waits until the pool is full again.
  let refillMisses = 0;
  // Debug: every refill says "warm pool full" (at info only the first does).
  const pool = await withMoat(
    { MOAT_POOL_SIZE: String(POOL_SIZE), MOAT_LOG_LEVEL: "debug" },
    async (moat) => {
      let fills = 1;
      return sequentialTTI(moat, async () => {
        if (!(await poolFull(moat, fills))) refillMisses++;
        fills++;
      });
    },
  );

  const notes = (...lines: (string | undefined)[]) => lines.filter((l): l is string => !!l);
  const fig = (
    name: string,
    value: Summary,
    target: Figure["target"],
    extra: string[],
    baseline: Figure["baseline"] = bareStart,
  ): Figure => ({ name, unit: "ms", value, baseline, target, notes: extra });
  return [
    fig(
      `TTI: create → first commands.run, ${SEQUENTIAL} sequential, cold boot (MOAT_TEMPLATE_SNAPSHOTS=off)`,
      summarize(cold.samples),
      undefined,
      notes(cold.phases, kindNote(cold.kinds)),
    ),
    fig(
      `TTI: create → first commands.run, ${SEQUENTIAL} sequential, from the template snapshot (pool off)`,
      summarize(snap.sequential.samples),
      { median: 400 },
      notes(snap.sequential.phases, kindNote(snap.sequential.kinds)),
    ),
    fig(
      `TTI: create → first commands.run, ${SEQUENTIAL} sequential, from the warm pool (size ${POOL_SIZE}, full before each create)`,
      summarize(pool.samples),
      { median: 50, p99: 200 },
      notes(
        pool.phases,
        kindNote(pool.kinds),
        refillMisses > 0 ? `${refillMisses} creates went ahead before the pool was full again` : undefined,
      ),
    ),
    fig(
      `TTI: ${CONCURRENT} concurrent creates (template snapshots on, pool off)`,
      summarize(snap.concurrent),
      { p99: 1500 },
      notes(
        kindNote(snap.concurrentKinds),
        snap.concurrentRefused > 0
          ? `${snap.concurrentRefused} creates refused with 429 (node busy) and retried after 100 ms, inside the measured time`
          : undefined,
      ),
    ),
    fig(
      'commands.run("true") round trip through the client proxy',
      summarize(snap.proxied),
      { median: 15 },
      [],
      { name: "same, straight to the sandbox's envd", value: summarize(snap.directRT) },
    ),
    fig(
      "a command's start inside a sandbox: envd's vfork spawner runs `bash -l -c true` as the user, to its exit",
      summarize(snap.spawns.vfork),
      undefined,
      ["measured inside one sandbox by a script on envd's node, runs interleaved"],
      { name: "same through Node's child_process (a fork)", value: summarize(snap.spawns.node) },
    ),
    fig(
      "a terminal's start inside a sandbox: envd's vfork spawner runs `bash -l -c true` on a new terminal as the user, to its exit",
      summarize(snap.spawns.vforkTerminal),
      undefined,
      ["measured inside one sandbox by a script on envd's node, runs interleaved"],
      { name: "same through node-pty (a fork)", value: summarize(snap.spawns.nodePty) },
    ),
    fig(
      `pause of an idle sandbox through the API: sbx.pause() (${PAUSE_CYCLES} cycles, one sandbox)`,
      summarizeOrNaN(snap.pause),
      { median: 300 },
      notes(
        snap.pausePhases,
        ...snap.pauseFailures.map((f) => `FAILED cycle (pause or resume), sandbox replaced: ${f}`),
      ),
      {
        name: "bare runsc checkpoint --compression=none of a Node HTTP server",
        value: summarize(bareCR.checkpoint),
      },
    ),
    fig(
      'resume through the API: Sandbox.connect(id) → first commands.run("true") returns',
      summarizeOrNaN(snap.resume),
      { median: 300 },
      notes(snap.resumePhases),
      {
        name: "bare runsc restore --detach of the same bundle into a fresh netns, same inner address → serving HTTP (netns set-up untimed)",
        value: summarize(bareCR.restore),
      },
    ),
  ];
}

interface SpawnTimes {
  vfork: number[];
  node: number[];
  vforkTerminal: number[];
  nodePty: number[];
}

/**
 * How long envd takes to start a command and see it end, with its vfork addon and with Node's
 * child_process, and on a new terminal with the addon and with node-pty, timed inside the sandbox
 * (a script on envd's node, as root switching to the user as envd does), interleaved so all meet
 * the same load.
 */
async function spawnInside(sbx: Sandbox): Promise<SpawnTimes> {
  const script = `
const { spawn } = require("node:child_process");
const { closeSync } = require("node:fs");
const addon = require("/opt/moat/envd/native/moat_spawn.node");
const pty = require("/opt/moat/envd/node_modules/node-pty");
const env = { PATH: "/usr/local/bin:/usr/bin:/bin", HOME: "/home/user", USER: "user", LOGNAME: "user", SHELL: "/bin/bash", TERM: "xterm-256color" };
const envp = Object.entries(env).map(([k, v]) => k + "=" + v);
const argv = ["-l", "-c", "true"];
const viaNode = () => new Promise((r) => spawn("/bin/bash", argv, { cwd: "/home/user", env, uid: 1000, gid: 1000, detached: true, stdio: ["ignore", "pipe", "pipe"] }).once("close", r));
const viaVfork = () => new Promise((r) => addon.spawn("/bin/bash", ["/bin/bash", ...argv], envp, "/home/user", 1000, 1000, true, false, r, null));
const viaNodePty = () => new Promise((r) => { const t = pty.spawn("/bin/bash", argv, { cols: 80, rows: 24, cwd: "/home/user", env, uid: 1000, gid: 1000, encoding: null }); t.onExit(r); });
const viaVforkTerminal = () => new Promise((r) => { const fds = addon.spawn("/bin/bash", ["/bin/bash", ...argv], envp, "/home/user", 1000, 1000, true, false, () => { closeSync(fds[1]); closeSync(fds[2]); r(); }, [80, 24]); });
const time = async (f) => { const t = performance.now(); await f(); return performance.now() - t; };
(async () => {
  const out = { vfork: [], node: [], vforkTerminal: [], nodePty: [] };
  for (let i = 0; i < 30; i++) {
    out.vfork.push(await time(viaVfork));
    out.node.push(await time(viaNode));
    out.vforkTerminal.push(await time(viaVforkTerminal));
    out.nodePty.push(await time(viaNodePty));
  }
  console.log(JSON.stringify(out));
  process.exit(0);
})();
`;
  await sbx.files.write("/tmp/moat-bench-spawn.js", script, { user: "root" });
  const result = await sbx.commands.run("/opt/moat/node /tmp/moat-bench-spawn.js", { user: "root" });
  return JSON.parse(result.stdout) as SpawnTimes;
}
