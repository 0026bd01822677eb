/**
 * Crash safety of `moat up`: the process is SIGKILLed at injected points (MOAT_FAULTS=<step>=crash)
 * in the middle of a create, a pause, a resume and a template build, then started again on the
 * same data directory. After every restart: the API's records and the node's agree; the sandbox
 * that was running runs on with its memory (same process, counter carried on); the paused one is
 * still paused and later resumes with its files and memory; the host holds exactly what the live
 * sandboxes need (runsc containers and processes, cgroups, namespaces, veths, mounts, directories)
 * and nothing half-made is left under templates/.
 */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { once } from "node:events";
import { readdir, readFile, readlink } from "node:fs/promises";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import { SandboxState } from "@moat/shared/gen/orchestrator";
import { Sandbox, Template } from "e2b";
import { COUNTER_SERVER } from "../helpers/counter.js";
import {
  assertNothingOutlives,
  moatCgroups,
  nodeClient,
  releasesDone,
  settledHostState,
} from "../helpers/host-state.js";
import { getByHost, type RunningMoat, startMoat, useMoat } from "../helpers/moat-up.js";

type Counter = { pid: number; count: number };

/** A writer that keeps appending to a file, so that files change after a restore. */
const TICKER = "sh -c 'while :; do date +%s%N >> /home/user/ticks; sleep 0.2; done'";

describe("moat up: SIGKILL at injected points, then a restart on the same data dir", {
  timeout: 900_000,
}, () => {
  let moat: RunningMoat;
  /** Container cgroups another run left before this test began: not this test's to account for. */
  let foreignCgroups: string[] = [];
  /** Running throughout: its counter server must carry on across every crash. */
  let kept: Sandbox;
  let keptCounter: Counter;
  /** Paused with its memory before the crashes; resumed (and paused again) between them. */
  let dormant: Sandbox;
  let dormantCounter: Counter;
  /** Sandboxes whose create was cut by a crash, by the id the node gave them. */
  const cutCreates: string[] = [];

  async function askCounter(sandboxID: string): Promise<Counter> {
    const res = await getByHost(moat, sandboxID, 7000, "/");
    assert.equal(res.status, 200, res.body);
    return JSON.parse(res.body) as Counter;
  }

  async function startCounter(sbx: Sandbox): Promise<Counter> {
    await sbx.files.write("/home/user/counter.py", COUNTER_SERVER);
    // No time limit: the SDK's default (60 s) would end it halfway through the crashes.
    await sbx.commands.run("python3 /home/user/counter.py", { background: true, timeoutMs: 0 });
    for (let i = 0; i < 100; i++) {
      const counter = await askCounter(sbx.sandboxId).catch(() => undefined);
      if (counter) return counter;
      await new Promise((r) => setTimeout(r, 100));
    }
    throw new Error("the counter server did not answer");
  }

  /** The same process answers, its count one further: the sandbox's memory lived through. */
  async function counterCarriesOn(sandboxID: string, before: Counter): Promise<Counter> {
    const now = await askCounter(sandboxID);
    assert.deepEqual(now, { pid: before.pid, count: before.count + 1 }, `${sandboxID}'s memory`);
    return now;
  }

  /**
   * Restarts moat with `step` armed to crash, runs `action` (which the crash cuts), waits for the
   * process to die there, and starts moat again with nothing armed.
   */
  async function crashAt(step: string, action: () => Promise<unknown>): Promise<void> {
    await moat.restart({ signal: "SIGKILL", env: { MOAT_FAULTS: `${step}=crash` } });
    useMoat(moat);
    const child = moat.child;
    const died =
      child.exitCode !== null || child.signalCode !== null ? Promise.resolve() : once(child, "exit");
    await action().then(
      () => assert.fail(`${step}: the operation finished although moat was to crash in it`),
      () => undefined,
    );
    await died;
    assert.equal(child.signalCode, "SIGKILL", `moat died at ${step}`);
    await moat.restart();
    useMoat(moat);
  }

  /**
   * The API's records and the node's agree (Sandbox.list beside the node's List, with states), and
   * the host holds exactly what the node's records need. The API reconciles with the node just
   * after it starts, so this waits a little for the two to meet.
   */
  async function consistent(): Promise<Map<string, string>> {
    const node = nodeClient(moat.orchestratorPort, moat.nodeToken);
    const deadline = Date.now() + 20_000;
    let api = new Map<string, string>();
    let onNode = new Map<string, string>();
    for (;;) {
      api = new Map((await Sandbox.list().nextItems()).map((s) => [s.sandboxId, s.state]));
      onNode = new Map(
        (await node.list({})).sandboxes.map((s) => [
          s.config!.sandboxId,
          s.state === SandboxState.PAUSED ? "paused" : s.state === SandboxState.RUNNING ? "running" : "other",
        ]),
      );
      const same = api.size === onNode.size && [...api].every(([id, state]) => onNode.get(id) === state);
      if (same || Date.now() > deadline) break;
      await new Promise((r) => setTimeout(r, 250));
    }
    assert.deepEqual(
      [...api].sort(),
      [...onNode].sort(),
      "the API lists what the node runs, in the same states",
    );
    // A sandbox the API just killed (its record was closed by the crash) leaves the node's list at
    // once but keeps a "stopping" record until its release in the background ends.
    await releasesDone(moat.dataDir);
    // A sandbox the node just reported paused may still be releasing its runtime (container,
    // mount, network): the host has a few seconds to settle; a leak stays past them.
    const host = await settledHostState(moat.dataDir, { foreignCgroups }, 10_000);
    assert.deepEqual(
      host.actual,
      host.expected,
      "the host holds what the live sandboxes need, and nothing else",
    );
    assert.deepEqual(
      host.records.map((r) => [r.sandboxID, r.state]).sort(),
      [...onNode].sort(),
      `every sandbox directory belongs to a sandbox the node has; moat's log:\n${moat.log().slice(-6000)}`,
    );
    for (const id of cutCreates) assert.ok(!onNode.has(id), `the cut create of ${id} left no sandbox`);
    return api;
  }

  before(async () => {
    foreignCgroups = await moatCgroups();
    // No networks made ahead: the host must hold only what the sandboxes' records name.
    moat = await startMoat({ env: { MOAT_NETWORK_POOL_SIZE: "0" } });
    useMoat(moat);
    kept = await Sandbox.create("base", { timeoutMs: 1_200_000 });
    keptCounter = await startCounter(kept);
    await kept.files.write("/home/user/kept.txt", "kept before the crashes");
    dormant = await Sandbox.create("base", { timeoutMs: 1_200_000 });
    dormantCounter = await startCounter(dormant);
    await dormant.files.write("/home/user/dormant.txt", "dormant before the crashes");
    await dormant.commands.run(TICKER, { background: true, timeoutMs: 0 });
    assert.equal(await dormant.pause(), true);
  });

  after(async () => {
    if (!moat) return;
    // A test that failed with moat dead: start it once more so that it adopts and then kills.
    if (moat.child.exitCode !== null || moat.child.signalCode !== null)
      await moat.restart().catch(() => undefined);
    const dataDir = moat.dataDir;
    await moat.cleanup();
    await assertNothingOutlives(dataDir, foreignCgroups);
  });

  /** The create a crash cut: the sandbox directory it left, named by the node. */
  async function newSandboxDirs(before: string[]): Promise<string[]> {
    const now = await readdir(path.join(moat.dataDir, "sandboxes")).catch(() => [] as string[]);
    return now.filter((d) => !before.includes(d));
  }

  for (const step of ["create:rootfs", "create:runtime", "create:running"]) {
    test(`a crash at ${step} leaves no sandbox behind; the others run on`, async () => {
      const before = await readdir(path.join(moat.dataDir, "sandboxes"));
      let made: string[] = [];
      await crashAt(step, async () => {
        const creating = Sandbox.create("base");
        // The node names the sandbox's directory before the crash; remember it to look for it after.
        const watch = setInterval(
          () =>
            void newSandboxDirs(before).then((dirs) => {
              if (dirs.length > 0) made = dirs;
            }),
          20,
        );
        try {
          await creating;
        } finally {
          clearInterval(watch);
        }
      });
      cutCreates.push(...made);
      await consistent();
      keptCounter = await counterCarriesOn(kept.sandboxId, keptCounter);
      assert.equal(await kept.files.read("/home/user/kept.txt"), "kept before the crashes");
    });
  }

  test("a crash after a pause froze the sandbox: it runs on as before", async () => {
    await crashAt("pause:frozen", () => kept.pause());
    const api = await consistent();
    assert.equal(api.get(kept.sandboxId), "running");
    keptCounter = await counterCarriesOn(kept.sandboxId, keptCounter);
  });

  test("a crash in a resume after the restore: still paused, and a resume then has its memory and files", async () => {
    await crashAt("resume:runtime", () => Sandbox.connect(dormant.sandboxId));
    let api = await consistent();
    assert.equal(api.get(dormant.sandboxId), "paused", "the sandbox is still paused");
    const resumed = await Sandbox.connect(dormant.sandboxId);
    dormantCounter = await counterCarriesOn(dormant.sandboxId, dormantCounter);
    assert.equal(await resumed.files.read("/home/user/dormant.txt"), "dormant before the crashes");
    api = await consistent();
    assert.equal(api.get(dormant.sandboxId), "running");
  });

  test("a crash after a pause committed its memory: paused, and resumes with it", async () => {
    await crashAt("pause:committed", () => dormant.pause());
    let api = await consistent();
    assert.equal(api.get(dormant.sandboxId), "paused");
    const resumed = await Sandbox.connect(dormant.sandboxId);
    dormantCounter = await counterCarriesOn(dormant.sandboxId, dormantCounter);
    const ticks = (await resumed.files.read("/home/user/ticks")).trim().split("\n");
    assert.ok(ticks.length > 0 && ticks.every((t) => /^\d+$/.test(t)), "the ticker's file is whole");
    api = await consistent();
    assert.equal(api.get(dormant.sandboxId), "running");
  });

  test("a crash before a checkpoint was committed: paused with its files, and resumes", async () => {
    await crashAt("pause:checkpointed", () => dormant.pause());
    const api = await consistent();
    assert.equal(api.get(dormant.sandboxId), "paused", "a sandbox whose runtime stopped is never lost");
    const resumed = await Sandbox.connect(dormant.sandboxId);
    assert.equal(await resumed.files.read("/home/user/dormant.txt"), "dormant before the crashes");
    assert.equal((await resumed.commands.run("echo alive")).stdout, "alive\n");
    await consistent();
  });

  test("a crash while runsc checkpoints: the restart meets the checkpoint under way, and the sandbox is not lost", async () => {
    // runsc's checkpoint is held (SIGSTOP) once it runs, moat is killed, and the next moat starts
    // while the checkpoint, orphaned, is still under way; it goes on once that moat is up.
    // 200 MB of memory that does not compress make the checkpoint last long enough to be caught
    // (a small sandbox's took 300 ms, which polling sometimes missed).
    await dormant.commands.run(
      'python3 -c \'import os, time; b = os.urandom(200 * 2**20); open("/tmp/ballast-ready", "w").close(); time.sleep(10**9)\'',
      { background: true },
    );
    for (let i = 0; !(await dormant.files.exists("/tmp/ballast-ready")); i++) {
      assert.ok(i < 300, "the ballast was not in memory within 30 s");
      await new Promise((r) => setTimeout(r, 100));
    }
    let pauseError: unknown;
    const pausing = dormant.pause().catch((err: unknown) => {
      pauseError = err;
    });
    const checkpoint = await runscCommand(moat.dataDir, "checkpoint").catch((err: unknown) => {
      throw new Error(`${String(err)}; the pause: ${String(pauseError)}\n${moat.log().slice(-5000)}`);
    });
    // Held only once it writes its image: earlier it may be loading the container's state under
    // runsc's lock, and a restart's `runsc list` would wait for that lock for ever.
    for (let i = 0; !(await writesImage(checkpoint)); i++) {
      assert.ok(i < 3000, "the checkpoint did not open its image within 30 s");
      await new Promise((r) => setTimeout(r, 10));
    }
    process.kill(checkpoint, "SIGSTOP");
    try {
      await moat.stop("SIGKILL");
      await pausing;
      await moat.restart();
    } finally {
      process.kill(checkpoint, "SIGCONT");
    }
    useMoat(moat);
    // The checkpoint ends, stopping the container it saved, with no process left to commit it:
    // the node, which adopted the sandbox as running, pauses it with its files.
    while (await processExists(checkpoint)) await new Promise((r) => setTimeout(r, 100));
    // The node's word first: the whole-host check below must not run while the pause settles.
    const node = nodeClient(moat.orchestratorPort, moat.nodeToken);
    const deadline = Date.now() + 20_000;
    for (;;) {
      const listed = (await node.list({})).sandboxes.find((s) => s.config?.sandboxId === dormant.sandboxId);
      if (listed?.state !== SandboxState.RUNNING && listed?.state !== SandboxState.PAUSING) break;
      if (Date.now() > deadline) break;
      await new Promise((r) => setTimeout(r, 250));
    }
    const state = (await consistent()).get(dormant.sandboxId) ?? "lost";
    assert.equal(state, "paused", "the sandbox whose pause was cut is paused with its files, not lost");
    const back = await Sandbox.connect(dormant.sandboxId);
    assert.equal(await back.files.read("/home/user/dormant.txt"), "dormant before the crashes");
    await consistent();
  });

  for (const step of ["build:sandbox", "build:committed"]) {
    test(`a crash at ${step} leaves no half-made layer, build or build sandbox; the build is reported failed`, async () => {
      let build: { templateId: string; buildId: string } | undefined;
      await crashAt(step, async () => {
        build = await Template.buildInBackground(
          Template().fromBaseImage().runCmd(`echo ${step} > /home/user/step.txt`),
          `crash-${step.replace(":", "-")}`,
          { cpuCount: 1, memoryMB: 512 },
        );
        for (;;) {
          const status = await Template.getBuildStatus(build);
          if (status.status !== "building" && status.status !== "waiting") return status;
          await new Promise((r) => setTimeout(r, 200));
        }
      });
      assert.ok(build, "the build started before the crash");
      await consistent();
      const builds = await readdir(path.join(moat.dataDir, "templates", "builds")).catch(
        () => [] as string[],
      );
      assert.ok(!builds.includes(build.buildId), "the interrupted build is not on the node");
      const status = await Template.getBuildStatus(build);
      assert.equal(status.status, "error", "the API reports the interrupted build failed");
      keptCounter = await counterCarriesOn(kept.sandboxId, keptCounter);
    });
  }
});

/** Waits for a runsc command (`run`, `checkpoint`, …) on the data directory's containers; its pid. */
/**
 * The pid of a runsc `command` of this data directory, as soon as one runs. pgrep scans /proc in
 * one go: a scan in Node, a file read per process, can take longer on a busy host than a small
 * sandbox's whole checkpoint.
 */
async function runscCommand(dataDir: string, command: string): Promise<number> {
  const pattern = `--root ${path.join(dataDir, "runsc")} .* ${command} `;
  const deadline = Date.now() + 60_000;
  while (Date.now() < deadline) {
    const found = spawnSync("pgrep", ["-n", "-f", "--", pattern], { encoding: "utf8" });
    const pid = Number.parseInt(found.stdout, 10);
    if (found.status === 0 && pid > 0) return pid;
    await new Promise((r) => setTimeout(r, 2));
  }
  throw new Error(`no runsc ${command} ran`);
}

/** Whether the process has a checkpoint image open (runsc writes `checkpoint.img` in the image directory). */
async function writesImage(pid: number): Promise<boolean> {
  const fds = await readdir(`/proc/${pid}/fd`).catch(() => [] as string[]);
  for (const fd of fds) {
    const target = await readlink(`/proc/${pid}/fd/${fd}`).catch(() => "");
    if (target.endsWith(".img")) return true;
  }
  return false;
}

async function processExists(pid: number): Promise<boolean> {
  const stat = await readFile(`/proc/${pid}/stat`, "utf8").catch(() => "");
  return stat !== "" && !/\) [ZX] /.test(stat);
}
