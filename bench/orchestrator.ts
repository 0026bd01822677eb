/**
 * Orchestrator figures: create → envd /health answers (10 cold creates) beside a bare `runsc run`
 * of a Node HTTP server on the same rootfs, network and runsc; memory per idle sandbox (PSS of its
 * host processes, and the host's used-memory delta over N idle sandboxes); and pause and resume of
 * an idle sandbox through the orchestrator's RPC beside bare `runsc checkpoint` and `runsc restore`
 * of that Node server.
 */
import { readdir, readFile, rm, writeFile } from "node:fs/promises";
import http from "node:http";
import path from "node:path";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import {
  type CreateInput,
  createSandboxNetwork,
  destroySandboxNetwork,
  ensureBaseTemplate,
  ensureRunsc,
  listNamespaces,
  mountRootfs,
  Runsc,
  removeSandboxDir,
  Slot,
  sandboxSpec,
  startOrchestrator,
  TemplateStore,
} from "@moat/orchestrator";
import { createNoopLogger } from "@moat/shared";
import {
  createSandbox,
  makeDataDir,
  removeDataDir,
  startOrchestrator as startOrchestratorProcess,
} from "../tests/integration/helpers/orchestrator.js";
import { kindNote, logEntries, phaseNote } from "./phases.js";
import type { Figure } from "./report.js";
import { summarize } from "./stats.js";

const RUNS = 10;
/** The highest network slot index (network/slot.ts). */
const MAX_SLOTS = 16_383;
/** Pause/resume cycles of one sandbox through the RPC (and of the bare baseline, interleaved). */
const PAUSE_CYCLES = Number(process.env.MOAT_BENCH_PAUSE_CYCLES ?? 20);
const PAUSE_WARMUP = 2;
const IDLE_SANDBOXES = Number(process.env.MOAT_BENCH_IDLE ?? 20);

async function waitForHTTP(url: string): Promise<void> {
  for (;;) {
    try {
      const res = await fetch(url, { signal: AbortSignal.timeout(1000) });
      if (res.status < 500) return;
    } catch {
      // not yet
    }
    await new Promise((r) => setTimeout(r, 5));
  }
}

/** runsc, the base template and a runsc state directory for bare containers. */
class BareEnv {
  private readonly deletions = new Set<Promise<void>>();

  constructor(
    readonly dataDir: string,
    readonly runsc: Runsc,
    readonly templateRootfs: string,
  ) {}

  /**
   * Kills a container's sandbox process and deletes the container in the background, as the
   * orchestrator does after a pause: `runsc delete` waits (~1.7 s here) until the host reaps the
   * process, outside every measurement but long enough to dominate the bench's run time.
   */
  async removeContainer(id: string): Promise<void> {
    const pid = (await this.runsc.state(id).catch(() => undefined))?.pid;
    if (pid) {
      try {
        process.kill(pid, "SIGKILL");
      } catch {
        // already gone
      }
    }
    const deletion: Promise<void> = this.runsc
      .destroy(id)
      .catch((err: unknown) => console.error(`bench: deleting bare container ${id}: ${err}`))
      .finally(() => this.deletions.delete(deletion));
    this.deletions.add(deletion);
  }

  /** Waits for the container deletions still under way. */
  async settle(): Promise<void> {
    await Promise.all(this.deletions);
  }
}

async function withBareEnv<T>(fn: (env: BareEnv) => Promise<T>): Promise<T> {
  const dataDir = await makeDataDir();
  try {
    const logger = createNoopLogger();
    const install = await ensureRunsc({ dataDir, logger });
    const base = await ensureBaseTemplate({ dataDir, logger });
    const runsc = new Runsc({
      binary: install.path,
      stateDir: path.join(dataDir, "runsc"),
      platform: install.platform,
    });
    const env = new BareEnv(dataDir, runsc, base.rootfs);
    try {
      return await fn(env);
    } finally {
      await env.settle();
    }
  } finally {
    await removeDataDir(dataDir);
  }
}

/**
 * Start → serving of a bare runsc container running a Node HTTP server, with the same rootfs,
 * network and flags as a sandbox: the runtime's own floor, the baseline of the create figures.
 */
export async function bareRuntimeStarts(runs: number): Promise<number[]> {
  return withBareEnv(async (env) => {
    const out: number[] = [];
    for (let i = 0; i < runs; i++) out.push(await bareRunscStart(env, i));
    return out;
  });
}

/**
 * The bundle of a bare container: the sandbox's spec (rootfs, mounts, limits, network namespace)
 * with a plain Node HTTP server answering 204 on envd's port instead of envd.
 */
async function writeBareBundle(dir: string, id: string, rootfs: string, slot: Slot): Promise<void> {
  const spec = sandboxSpec({
    sandboxID: id,
    containerID: id,
    rootfs,
    netnsPath: slot.guestNamespacePath,
    vcpu: 1,
    memoryMB: 512,
    pidsLimit: 1024,
    nodeBinary: process.execPath,
    envdDir: path.resolve("packages/envd/dist/sandbox"),
    envdPort: 49983,
  }) as { process: { args: string[] } };
  spec.process.args = [
    "/opt/moat/node",
    "-e",
    "require('http').createServer((q,s)=>{s.statusCode=204;s.end()}).listen(49983)",
  ];
  await writeFile(path.join(dir, "config.json"), JSON.stringify(spec));
}

/**
 * Slots of bare containers. An orchestrator runs beside them in some figures; it starts its slots
 * at a random index and takes the next ones upwards, so the bare ones keep half the range away from
 * a slot it uses (see keepBareSlotsAwayFrom), and any whose namespaces exist are skipped.
 */
const BARE_SLOT_COUNT = 300;
let bareSlotFirst = 16_000;
let bareSlotTurn = 0;
async function bareSlot(): Promise<Slot> {
  const taken = new Set(await listNamespaces());
  for (let tried = 0; tried < BARE_SLOT_COUNT; tried++) {
    const slot = new Slot(bareSlotFirst + (bareSlotTurn++ % BARE_SLOT_COUNT));
    if (!taken.has(slot.outerNamespace) && !taken.has(slot.guestNamespace)) return slot;
  }
  throw new Error("no free slot for a bare container");
}

/** Moves the bare slots half the range away from an orchestrator's slot at `hostAddress`. */
function keepBareSlotsAwayFrom(hostAddress: string): void {
  const [, , hi, lo] = hostAddress.split(".").map(Number);
  const index = (hi ?? 0) * 256 + (lo ?? 0);
  bareSlotFirst = 1 + ((index + 8_000) % (MAX_SLOTS - BARE_SLOT_COUNT));
}

/** A bare runsc container running a Node HTTP server, with the same rootfs, network and flags. */
async function bareRunscStart(env: BareEnv, i: number): Promise<number> {
  const slot = await bareSlot();
  const dir = path.join(env.dataDir, "bare", String(i));
  const id = `moat-bench-bare-${i}-${Date.now().toString(36)}`;
  await createSandboxNetwork(slot, { allowInternetAccess: false });
  try {
    const rootfs = await mountRootfs(env.templateRootfs, dir, false);
    await writeBareBundle(dir, id, rootfs.merged, slot);
    const started = performance.now();
    await env.runsc.run(id, dir, path.join(dir, "runsc.log"));
    await waitForHTTP(`http://${slot.hostAddress}:49983/`);
    return performance.now() - started;
  } finally {
    await env.removeContainer(id);
    await destroySandboxNetwork(slot);
    await removeSandboxDir(dir);
  }
}

/**
 * The baseline of the pause and resume figures: the same bare Node HTTP server as above, taken
 * through bare `runsc checkpoint` (uncompressed, as the orchestrator does) and `runsc restore
 * --detach` of the same bundle and rootfs mount into a fresh network slot with the same inner
 * address, timed until it serves HTTP at the new slot's host address. What the orchestrator adds
 * around them (envd /freeze, network and mount set-up and release, /init) is not in it.
 */
export class BareCheckpointRestore {
  private slot: Slot | undefined;
  private id = "";
  private generation = 0;
  private readonly dir: string;
  private rootfs = "";

  private constructor(private readonly env: BareEnv) {
    this.dir = path.join(env.dataDir, "bare-checkpoint");
  }

  /** Runs `fn` with a bare server running; removes everything after. */
  static async with<T>(fn: (bare: BareCheckpointRestore) => Promise<T>): Promise<T> {
    return withBareEnv(async (env) => {
      const bare = new BareCheckpointRestore(env);
      try {
        await bare.start();
        return await fn(bare);
      } finally {
        await bare.close();
      }
    });
  }

  /** Runs `cycles` checkpoint/restore cycles after `warmup` unmeasured ones. */
  static async sample(cycles: number, warmup = 2): Promise<{ checkpoint: number[]; restore: number[] }> {
    return BareCheckpointRestore.with(async (bare) => {
      const checkpoint: number[] = [];
      const restore: number[] = [];
      for (let i = 0; i < warmup + cycles; i++) {
        const t = await bare.cycle();
        if (i < warmup) continue;
        checkpoint.push(t.checkpoint);
        restore.push(t.restore);
      }
      return { checkpoint, restore };
    });
  }

  /** A fresh slot's network and the bundle pointing at it, under a new container id. */
  private async prepare(): Promise<Slot> {
    const slot = await bareSlot();
    this.id = `moat-bench-ckpt-${this.generation++}`;
    await createSandboxNetwork(slot, { allowInternetAccess: false });
    this.slot = slot;
    await writeBareBundle(this.dir, this.id, this.rootfs, slot);
    return slot;
  }

  private async start(): Promise<void> {
    this.rootfs = (await mountRootfs(this.env.templateRootfs, this.dir, false)).merged;
    const slot = await this.prepare();
    await this.env.runsc.run(this.id, this.dir, path.join(this.dir, "runsc.log"));
    await waitForServing(`http://${slot.hostAddress}:49983/`);
  }

  async cycle(): Promise<{ checkpoint: number; restore: number }> {
    const { runsc } = this.env;
    const image = path.join(this.dir, "image");
    await rm(image, { recursive: true, force: true });
    let started = performance.now();
    await runsc.checkpoint(this.id, image);
    const checkpoint = performance.now() - started;
    await this.release();

    const slot = await this.prepare();
    started = performance.now();
    await runsc.restore(this.id, this.dir, image, path.join(this.dir, "runsc.log"));
    await waitForServing(`http://${slot.hostAddress}:49983/`);
    const restore = performance.now() - started;
    return { checkpoint, restore };
  }

  /** Deletes the current container (stopped by its checkpoint, or running) and its network. */
  private async release(): Promise<void> {
    await this.env.removeContainer(this.id);
    if (this.slot) await destroySandboxNetwork(this.slot);
    this.slot = undefined;
  }

  private async close(): Promise<void> {
    await this.release();
    await removeSandboxDir(this.dir);
  }
}

/** Polls `url` on a new connection each time (no keep-alive) until it answers below 500. */
export async function waitForServing(url: string, timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const status = await new Promise<number>((resolve) => {
      const req = http.get(url, { agent: false, timeout: 1000 }, (res) => {
        res.resume();
        resolve(res.statusCode ?? 0);
      });
      req.once("timeout", () => req.destroy());
      req.once("error", () => resolve(0));
    });
    if (status > 0 && status < 500) return;
    if (Date.now() > deadline) throw new Error(`${url} did not answer within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

/** Sum of the PSS of the host processes that belong to a runsc container. */
export async function containerPSS(containerID: string): Promise<number> {
  let total = 0;
  for (const pid of await readdir("/proc")) {
    if (!/^\d+$/.test(pid)) continue;
    try {
      const cmdline = await readFile(`/proc/${pid}/cmdline`, "utf8");
      if (!cmdline.includes(containerID)) continue;
      const rollup = await readFile(`/proc/${pid}/smaps_rollup`, "utf8");
      total += Number(/^Pss:\s+(\d+) kB/m.exec(rollup)?.[1] ?? 0) * 1024;
    } catch {
      // exited
    }
  }
  return total;
}

/** An ordinary 1-vCPU, 512 MB sandbox of the base template. */
function benchSandbox(sandboxID: string): CreateInput {
  return {
    sandboxID,
    templateID: "base",
    teamID: "bench",
    vcpu: 1,
    memoryMB: 512,
    diskSizeMB: 0,
    envVars: {},
    metadata: {},
    envdAccessToken: "",
    allowInternetAccess: true,
    defaultUser: "",
    defaultWorkdir: "",
    endTime: new Date(Date.now() + 600_000),
  };
}

async function usedMemory(): Promise<number> {
  const info = await readFile("/proc/meminfo", "utf8");
  const kb = (key: string) => Number(new RegExp(`^${key}:\\s+(\\d+)`, "m").exec(info)?.[1] ?? 0) * 1024;
  return kb("MemTotal") - kb("MemAvailable");
}

export async function benchOrchestrator(): Promise<Figure[]> {
  return [...(await benchCreateAndMemory()), ...(await benchPauseResume())];
}

/** Cold creates and idle memory on an in-process orchestrator (no template snapshot, no pool). */
async function benchCreateAndMemory(): Promise<Figure[]> {
  const dataDir = await makeDataDir();
  const logger = createNoopLogger();
  const install = await ensureRunsc({ dataDir, logger });
  const base = await ensureBaseTemplate({ dataDir, logger });
  const orch = await startOrchestrator({
    dataDir,
    port: 0,
    host: "127.0.0.1",
    logger,
    runscBinary: install.path,
    platform: install.platform,
    templates: new TemplateStore(dataDir, base.rootfs),
    // Cold boots, the same work as the bare `runsc run` beside them; no pool entries in the
    // memory figures. Snapshot and pool starts are in the platform figures.
    templateSnapshots: false,
    poolSize: 0,
    prepareTemplates: [],
  });
  const bareEnv = new BareEnv(
    dataDir,
    new Runsc({ binary: install.path, stateDir: path.join(dataDir, "runsc"), platform: install.platform }),
    base.rootfs,
  );
  try {
    const create: number[] = [];
    const bare: number[] = [];
    for (let i = 0; i < RUNS; i++) {
      bare.push(await bareRunscStart(bareEnv, i));
      const started = performance.now();
      const sandbox = await orch.manager.create(benchSandbox(`bench${i}${Date.now().toString(36)}`));
      await waitForHTTP(`http://${sandbox.hostAddress}:49983/health`);
      create.push(performance.now() - started);
      await orch.manager.kill(sandbox.id);
    }

    // Idle memory: N sandboxes side by side.
    const before = await usedMemory();
    const idle = [];
    for (let i = 0; i < IDLE_SANDBOXES; i++) {
      idle.push(await orch.manager.create(benchSandbox(`idle${i}${Date.now().toString(36)}`)));
    }
    await new Promise((r) => setTimeout(r, 3000));
    const delta = ((await usedMemory()) - before) / IDLE_SANDBOXES / 1024 / 1024;
    const pss = await Promise.all(idle.map((s) => containerPSS(s.record.lifecycleID)));
    await Promise.all(idle.map((s) => orch.manager.kill(s.id)));

    return [
      {
        name: "orchestrator create → envd /health answers (cold boot, snapshots off)",
        unit: "ms",
        value: summarize(create),
        baseline: {
          name: "bare runsc run of a Node HTTP server, same rootfs and network",
          value: summarize(bare),
        },
        target: { ratio: 1.3 },
      },
      {
        name: `memory per idle sandbox, PSS of its host processes (N=${IDLE_SANDBOXES})`,
        unit: "MB",
        value: summarize(pss.map((b) => b / 1024 / 1024)),
        target: { median: 25 },
      },
      {
        name: `memory per idle sandbox, host used-memory delta / N (N=${IDLE_SANDBOXES})`,
        unit: "MB",
        value: summarize([delta]),
        target: { median: 25 },
      },
    ];
  } finally {
    await bareEnv.settle();
    await orch.manager.killAll();
    await orch.close();
    await removeDataDir(dataDir);
  }
}

/**
 * Pause and resume of one idle sandbox through the orchestrator's gRPC (`moat orchestrator` as a
 * process of its own), resume timed until envd answers /health at the new host address;
 * interleaved cycle by cycle with bare `runsc checkpoint` / `runsc restore` of a Node server.
 */
async function benchPauseResume(): Promise<Figure[]> {
  // Started before any bare network exists: its start-up reaps every moat-* namespace it does
  // not own.
  const orch = await startOrchestratorProcess();
  let logStart = 0;
  let sandboxId = "";
  try {
    const info = await createSandbox(orch, { timeoutMs: 3_600_000 });
    sandboxId = info.config!.sandboxId;
    keepBareSlotsAwayFrom(info.hostAddress);
    const pause: number[] = [];
    const resume: number[] = [];
    const kinds: string[] = [];
    const bare = await BareCheckpointRestore.with(async (bare) => {
      const checkpoint: number[] = [];
      const restore: number[] = [];
      for (let i = 0; i < PAUSE_WARMUP + PAUSE_CYCLES; i++) {
        const measured = i >= PAUSE_WARMUP;
        if (i === PAUSE_WARMUP) logStart = orch.log().length;
        let started = performance.now();
        await orch.client.pause({ sandboxId });
        if (measured) pause.push(performance.now() - started);
        started = performance.now();
        const res = await orch.client.resume({
          sandboxId,
          endTime: timestampFromDate(new Date(Date.now() + 3_600_000)),
        });
        await waitForServing(`http://${res.sandbox!.hostAddress}:49983/health`);
        if (measured) {
          resume.push(performance.now() - started);
          kinds.push(res.sandbox!.startKind);
        }
        const t = await bare.cycle();
        if (measured) {
          checkpoint.push(t.checkpoint);
          restore.push(t.restore);
        }
      }
      return { checkpoint, restore };
    });
    const log = orch.log().slice(logStart);
    const notes = (msg: string) => [phaseNote(logEntries(log, msg))].filter((n): n is string => !!n);
    return [
      {
        name: `pause of an idle sandbox, orchestrator Pause RPC (${PAUSE_CYCLES} cycles, one sandbox)`,
        unit: "ms",
        value: summarize(pause),
        baseline: {
          name: "bare runsc checkpoint --compression=none of a Node HTTP server",
          value: summarize(bare.checkpoint),
        },
        target: { median: 300 },
        notes: notes("sandbox paused"),
      },
      {
        name: "resume of that sandbox, orchestrator Resume RPC → envd /health answers at the new address",
        unit: "ms",
        value: summarize(resume),
        baseline: {
          name: "bare runsc restore --detach of the same bundle into a fresh netns, same inner address → serving HTTP (netns set-up untimed)",
          value: summarize(bare.restore),
        },
        target: { median: 300 },
        notes: [...notes("sandbox resumed"), kindNote(kinds, "Resume's answer")],
      },
    ];
  } finally {
    if (sandboxId) await orch.client.delete({ sandboxId }).catch(() => undefined);
    await orch.stop();
    await removeDataDir(orch.dataDir);
  }
}
