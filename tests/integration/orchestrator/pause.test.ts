/**
 * Pause and resume on a real node: memory checkpoints in gVisor, files on the host overlay, the
 * official SDK talking to envd at each run's new host address. What must never happen: a process
 * that restarts, a file that is lost, a sandbox half paused and half running, a resource left.
 */
import assert from "node:assert/strict";
import { before, describe, test } from "node:test";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { Code, type ConnectError } from "@connectrpc/connect";
import { type SandboxInfo, SandboxState } from "@moat/shared/gen/orchestrator";
import { COUNTER_SERVER } from "../helpers/counter.js";
import { createSandbox, hostResources, sdkFor, settledHostResources } from "../helpers/orchestrator.js";
import { withOrchestrator } from "../helpers/with-orchestrator.js";

async function startCounter(info: SandboxInfo): Promise<void> {
  const sbx = sdkFor(info);
  await sbx.files.write("/home/user/counter.py", COUNTER_SERVER);
  // timeoutMs 0: the SDK's default 60 s bounds a command's life, and 50 cycles on a busy machine outlast it.
  await sbx.commands.run("python3 /home/user/counter.py >/tmp/counter.log 2>&1", {
    background: true,
    timeoutMs: 0,
  });
  for (let i = 0; i < 100; i++) {
    if (await askCounter(info).catch(() => undefined)) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error("the counter server did not start");
}

async function askCounter(info: SandboxInfo): Promise<{ pid: number; count: number }> {
  const res = await fetch(`http://${info.hostAddress}:7000/`, { signal: AbortSignal.timeout(5000) });
  return (await res.json()) as { pid: number; count: number };
}

const endIn = (ms: number) => timestampFromDate(new Date(Date.now() + ms));

describe("orchestrator: pause and resume", { timeout: 900_000 }, () => {
  const orch = withOrchestrator();
  let baseline: Awaited<ReturnType<typeof hostResources>>;

  before(async () => {
    baseline = await hostResources(orch);
  });

  const pause = async (id: string) => (await orch.client.pause({ sandboxId: id })).sandbox!;
  const resume = async (id: string) =>
    (await orch.client.resume({ sandboxId: id, endTime: endIn(300_000) })).sandbox!;

  test("50 pause/resume cycles: the process never restarts, no file is lost", async () => {
    let info = await createSandbox(orch);
    const id = info.config!.sandboxId;
    await startCounter(info);
    const first = await askCounter(info);
    const pauseMs: number[] = [];
    const resumeMs: number[] = [];
    for (let cycle = 0; cycle < 50; cycle++) {
      const sbx = sdkFor(info);
      await sbx.files.write(`/home/user/cycles/${cycle}.txt`, `cycle ${cycle}\n`.repeat(cycle + 1));
      const counter = await askCounter(info).catch(async (err) => {
        const ps = await sbx.commands.run("ps aux; cat /tmp/counter.log", { user: "root" }).catch((e) => e);
        throw new Error(`cycle ${cycle}: ${err.cause?.message ?? err}\n${ps.stdout ?? ps}`);
      });
      assert.equal(counter.pid, first.pid, `cycle ${cycle}: the counter process is the same`);
      assert.equal(counter.count, first.count + cycle + 1, `cycle ${cycle}: its memory is intact`);

      let t = performance.now();
      const paused = await pause(id);
      pauseMs.push(performance.now() - t);
      assert.equal(paused.state, SandboxState.PAUSED);
      assert.equal(paused.hostAddress, "");
      t = performance.now();
      info = await resume(id);
      info.config!.envdAccessToken = "";
      resumeMs.push(performance.now() - t);
      assert.equal(info.state, SandboxState.RUNNING);
    }
    const sbx = sdkFor(info);
    const listing = await sbx.files.list("/home/user/cycles");
    assert.equal(listing.length, 50);
    for (let cycle = 0; cycle < 50; cycle++) {
      assert.equal(
        await sbx.files.read(`/home/user/cycles/${cycle}.txt`),
        `cycle ${cycle}\n`.repeat(cycle + 1),
        `file of cycle ${cycle}`,
      );
    }
    const last = await askCounter(info);
    assert.deepEqual(last, { pid: first.pid, count: first.count + 51 });
    const hostname = await sbx.commands.run("hostname");
    assert.equal(hostname.stdout.trim(), id);
    const median = (xs: number[]) => xs.sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
    console.log(
      `pause median ${median(pauseMs).toFixed(0)} ms, resume median ${median(resumeMs).toFixed(0)} ms`,
    );
    await orch.client.delete({ sandboxId: id });
  });

  test("a pause during a running command: the command carries on after resume", async () => {
    let info = await createSandbox(orch);
    const id = info.config!.sandboxId;
    const sbx = sdkFor(info);
    const handle = await sbx.commands.run(
      "for i in $(seq 1 30); do echo $i >> /tmp/progress; sleep 0.1; done; echo done",
      { background: true },
    );
    const streamEnded = handle.wait().then(
      () => "exited",
      () => "disconnected",
    );
    await new Promise((r) => setTimeout(r, 800));
    await pause(id);
    assert.equal(await streamEnded, "disconnected", "the client's stream ends at the pause");
    await new Promise((r) => setTimeout(r, 1000));
    info = await resume(id);
    const after = sdkFor(info);
    const reattached = await after.commands.connect(handle.pid);
    const result = await reattached.wait();
    assert.equal(result.exitCode, 0);
    const progress = (await after.files.read("/tmp/progress")).trim().split("\n");
    assert.deepEqual(
      progress,
      Array.from({ length: 30 }, (_, i) => String(i + 1)),
      "every step ran once: the loop went on where it was",
    );
    await orch.client.delete({ sandboxId: id });
  });

  test("pause rules: paused twice and resumed while running fail; kill of a paused sandbox", async () => {
    const info = await createSandbox(orch);
    const id = info.config!.sandboxId;
    await assert.rejects(resume(id), (err: ConnectError) => err.code === Code.FailedPrecondition);
    await pause(id);
    await assert.rejects(pause(id), (err: ConnectError) => err.code === Code.FailedPrecondition);
    const listed = (await orch.client.list({})).sandboxes.find((s) => s.config!.sandboxId === id);
    assert.equal(listed?.state, SandboxState.PAUSED);
    await orch.client.delete({ sandboxId: id });
    await assert.rejects(
      orch.client.get({ sandboxId: id }),
      (err: ConnectError) => err.code === Code.NotFound,
    );
    assert.deepEqual(
      await settledHostResources(orch, baseline),
      baseline,
      "a killed paused sandbox leaves nothing",
    );
  });

  test("a filesystem-only pause keeps the files and boots afresh", async () => {
    let info = await createSandbox(orch);
    const id = info.config!.sandboxId;
    await sdkFor(info).files.write("/home/user/kept.txt", "kept");
    await orch.client.pause({ sandboxId: id, memory: false });
    info = await resume(id);
    assert.equal(info.startKind, "cold");
    const sbx = sdkFor(info);
    assert.equal(await sbx.files.read("/home/user/kept.txt"), "kept");
    assert.equal((await sbx.commands.run("echo $E2B_SANDBOX_ID")).stdout.trim(), id);
    await orch.client.delete({ sandboxId: id });
  });

  test("auto-pause at the end time, then resume", async () => {
    const info = await createSandbox(orch, { autoPause: true, timeoutMs: 3000 });
    const id = info.config!.sandboxId;
    await startCounter(info);
    const before = await askCounter(info);
    for (let i = 0; i < 100; i++) {
      const state = (await orch.client.get({ sandboxId: id })).sandbox!.state;
      if (state === SandboxState.PAUSED) break;
      await new Promise((r) => setTimeout(r, 200));
    }
    assert.equal((await orch.client.get({ sandboxId: id })).sandbox!.state, SandboxState.PAUSED);
    const resumed = await resume(id);
    assert.deepEqual(await askCounter(resumed), { pid: before.pid, count: before.count + 1 });
    await orch.client.delete({ sandboxId: id });
  });

  test("paused sandboxes survive an orchestrator crash; failures halfway leave a whole state", async () => {
    let info = await createSandbox(orch);
    const id = info.config!.sandboxId;
    await startCounter(info);
    const start = await askCounter(info);
    let asked = 1;
    const check = async (current: SandboxInfo) => {
      asked++;
      assert.deepEqual(await askCounter(current), { pid: start.pid, count: start.count + asked - 1 });
    };

    // Paused, then the orchestrator is killed: the next one finds it paused and resumes it.
    await pause(id);
    await orch.stop("SIGKILL");
    await orch.restart();
    assert.equal((await orch.client.get({ sandboxId: id })).sandbox!.state, SandboxState.PAUSED);
    info = await resume(id);
    await check(info);

    // A pause failing after envd froze: still running, and working.
    await orch.restart({ MOAT_FAULTS: "pause:frozen=error" });
    await assert.rejects(pause(id), (err: ConnectError) => err.code === Code.Unavailable);
    info = (await orch.client.get({ sandboxId: id })).sandbox!;
    assert.equal(info.state, SandboxState.RUNNING);
    await check(info);
    assert.equal((await sdkFor(info).commands.run("echo ok")).stdout, "ok\n");

    // The orchestrator dies right after the image was committed: paused with memory.
    await orch.restart({ MOAT_FAULTS: "pause:committed=crash" });
    await assert.rejects(pause(id));
    await orch.restart();
    assert.equal((await orch.client.get({ sandboxId: id })).sandbox!.state, SandboxState.PAUSED);

    // A resume failing after the restore: released, still paused, and the next resume works.
    await orch.restart({ MOAT_FAULTS: "resume:restored=error" });
    const beforeResume = await hostResources(orch);
    await assert.rejects(resume(id), (err: ConnectError) => err.code === Code.Unavailable);
    assert.equal((await orch.client.get({ sandboxId: id })).sandbox!.state, SandboxState.PAUSED);
    assert.deepEqual(await hostResources(orch), beforeResume, "the failed resume left nothing");

    // The orchestrator dies in the middle of a resume: the next one reaps the half and keeps it paused.
    await orch.restart({ MOAT_FAULTS: "resume:restored=crash" });
    await assert.rejects(resume(id));
    await orch.restart();
    assert.equal((await orch.client.get({ sandboxId: id })).sandbox!.state, SandboxState.PAUSED);
    info = await resume(id);
    await check(info);
    await orch.client.delete({ sandboxId: id });
    assert.deepEqual(await settledHostResources(orch, baseline), baseline);
  });
});
