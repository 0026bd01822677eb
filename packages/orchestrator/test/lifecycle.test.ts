/**
 * The sandbox lifecycle (sandbox/manager.ts) on a fake runtime: no root, no runsc, no network.
 * What is checked is the manager's own logic: states, capacity, records, events, and what a
 * failed pause, resume or create leaves behind.
 */
import assert from "node:assert/strict";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, beforeEach, describe, test } from "node:test";
import { createNoopLogger } from "@moat/shared";
import type { Runsc } from "../src/runtime/runsc.js";
import {
  CreateQueueTimeoutError,
  NodeBusyError,
  PauseFailedError,
  ResumeFailedError,
  SandboxStateError,
} from "../src/sandbox/errors.js";
import { type SandboxEvent, SandboxManager } from "../src/sandbox/manager.js";
import { DEAD_PID, FakeFactory } from "./fakes/factory.js";
import { BASE, createInput as input } from "./fakes/inputs.js";

describe("sandbox lifecycle on a fake runtime", () => {
  const dirs: string[] = [];
  let dataDir: string;
  let factory: FakeFactory;
  let manager: SandboxManager;
  let events: SandboxEvent[];

  function start(
    options: {
      maxSandboxes?: number;
      maxStarting?: number;
      maxQueued?: number;
      queueTimeoutMs?: number;
    } = {},
  ): SandboxManager {
    const m = new SandboxManager({
      dataDir,
      runsc: {} as Runsc,
      templates: { resolve: (id: string) => (id === "base" ? BASE : undefined) },
      nodeBinary: "/usr/bin/node",
      envdDir: "/nonexistent",
      logger: createNoopLogger(),
      maxSandboxes: options.maxSandboxes ?? 10,
      maxStarting: options.maxStarting ?? 4,
      maxQueued: options.maxQueued,
      queueTimeoutMs: options.queueTimeoutMs,
      pidsLimit: 100,
      envdReadyTimeoutMs: 1000,
      poolSize: 0,
      diskSizeMB: 0,
      factory,
    });
    m.subscribe((e) => events.push(e));
    return m;
  }

  const record = async (dir: string) =>
    JSON.parse(await readFile(path.join(dataDir, "sandboxes", dir, "sandbox.json"), "utf8")) as {
      state: string;
      memory?: boolean;
      kind?: string;
    };

  beforeEach(async () => {
    dataDir = await mkdtemp(path.join(tmpdir(), "moat-lifecycle-"));
    dirs.push(dataDir);
    factory = new FakeFactory();
    events = [];
    manager = start();
  });

  after(async () => {
    await manager?.close();
    await Promise.all(dirs.map((d) => rm(d, { recursive: true, force: true })));
  });

  test("a create boots, sends /init, records the sandbox running and says so", async () => {
    const sandbox = await manager.create(input("s1"));
    assert.equal(sandbox.state, "running");
    assert.deepEqual(factory.calls, ["boot:s1", "init:s1"]);
    assert.equal((await record("s1")).state, "running");
    assert.equal((await record("s1")).kind, "user");
    assert.deepEqual(
      events.map((e) => e.type),
      ["created"],
    );
  });

  test("a create that fails releases what it took and leaves no sandbox or directory", async () => {
    factory.failNext.add("init");
    await assert.rejects(manager.create(input("s1")), /fake init failed/);
    assert.throws(() => manager.get("s1"));
    assert.equal(factory.live.size, 0, "the runtime was released");
    await assert.rejects(record("s1"), { code: "ENOENT" });
    assert.deepEqual(
      events.map((e) => [e.type, e.reason]),
      [["failed", "fake init failed"]],
    );
  });

  test("capacity: at most maxSandboxes not paused", async () => {
    manager = start({ maxSandboxes: 2, maxStarting: 1 });
    await manager.create(input("s1"));
    await manager.create(input("s2"));
    await assert.rejects(manager.create(input("s3")), NodeBusyError);
    await manager.pause("s2");
    await manager.create(input("s3"));
    await assert.rejects(manager.resume("s2", new Date(Date.now() + 60_000)), NodeBusyError);
  });

  test("creates beyond maxStarting wait their turn; beyond maxQueued they are refused", async () => {
    const parallel = start({ maxSandboxes: 10, maxStarting: 1, maxQueued: 1 });
    let open!: () => void;
    factory.bootGate = new Promise((r) => {
      open = r;
    });
    const first = parallel.create(input("p1"));
    const second = parallel.create(input("p2"));
    await assert.rejects(parallel.create(input("p3")), /1 sandboxes waiting to start/);
    assert.equal(parallel.queue.waiting, 1);
    assert.equal(parallel.loadCounts().starting, 2, "the waiting create counts as starting");
    await assert.rejects(parallel.create(input("p2")), /already exists/, "a waiting create holds its id");
    open();
    factory.bootGate = undefined;
    assert.equal((await first).state, "running");
    assert.equal((await second).state, "running");
    assert.equal(parallel.loadCounts().starting, 0);
    await parallel.close();
  });

  test("a create that waits too long for its turn fails clearly and takes nothing", async () => {
    const parallel = start({ maxStarting: 1, queueTimeoutMs: 50 });
    let open!: () => void;
    factory.bootGate = new Promise((r) => {
      open = r;
    });
    const first = parallel.create(input("q1"));
    await assert.rejects(parallel.create(input("q2")), CreateQueueTimeoutError);
    assert.throws(() => parallel.get("q2"));
    assert.equal(parallel.queue.waiting, 0);
    open();
    factory.bootGate = undefined;
    await first;
    assert.equal(parallel.loadCounts().starting, 0);
    assert.deepEqual(
      events.filter((e) => e.sandboxID === "q2"),
      [],
      "no lifecycle event for a create that never started",
    );
    await parallel.close();
  });

  test("a resume waits its turn like a create", async () => {
    const parallel = start({ maxStarting: 1 });
    await parallel.create(input("r1"));
    await parallel.pause("r1");
    let open!: () => void;
    factory.bootGate = new Promise((r) => {
      open = r;
    });
    const creating = parallel.create(input("r2"));
    const resuming = parallel.resume("r1", new Date(Date.now() + 60_000));
    await new Promise((r) => setTimeout(r, 20));
    assert.equal(parallel.queue.waiting, 1);
    assert.equal(parallel.get("r1").state, "resuming");
    open();
    factory.bootGate = undefined;
    await creating;
    assert.equal((await resuming).state, "running");
    await parallel.close();
  });

  test("a pause saves memory and releases the runtime; a resume restores it", async () => {
    await manager.create(input("s1"));
    const paused = await manager.pause("s1");
    assert.equal(paused.state, "paused");
    assert.equal(paused.slot, undefined);
    assert.equal(factory.live.size, 0);
    assert.deepEqual(await record("s1"), { ...(await record("s1")), state: "paused", memory: true });
    const resumed = await manager.resume("s1", new Date(Date.now() + 60_000));
    assert.equal(resumed.state, "running");
    assert.equal((await record("s1")).state, "running");
    assert.deepEqual(
      events.map((e) => [e.type, e.reason]),
      [
        ["created", ""],
        ["pausing", "request"],
        ["paused", "request"],
        ["resumed", "memory"],
      ],
    );
  });

  test("a pause that fails while the runtime lives: the sandbox runs on, as it was", async () => {
    await manager.create(input("s1"));
    factory.failNext.add("checkpoint");
    await assert.rejects(manager.pause("s1"), PauseFailedError);
    const sandbox = manager.get("s1");
    assert.equal(sandbox.state, "running");
    assert.ok(factory.calls.includes("reopen:s1"), "traffic let in again");
    assert.equal((await record("s1")).state, "running");
    assert.equal(sandbox.backgroundDelete, false, "a later kill waits for the container");
    assert.deepEqual(
      events.slice(-2).map((e) => [e.type, e.reason]),
      [
        ["pausing", "request"],
        ["resumed", "pause failed"],
      ],
      "whoever held traffic for the pause hears that the sandbox runs on",
    );
    // It can be paused again.
    await manager.pause("s1");
    assert.equal(sandbox.state, "paused");
  });

  test("a pause that fails after the runtime died: paused with its files, never lost", async () => {
    await manager.create(input("s1"));
    factory.failNext.add("checkpoint");
    factory.running = false;
    const paused = await manager.pause("s1");
    assert.equal(paused.state, "paused");
    assert.equal((await record("s1")).memory, false, "no memory image: a resume boots afresh");
    await manager.resume("s1", new Date(Date.now() + 60_000));
    assert.equal(events.at(-1)?.reason, "files");
  });

  test("the end time cannot change mid-pause (its outcome would drop it); before and after it can", async () => {
    await manager.create(input("s1"));
    manager.updateEndTime("s1", new Date(Date.now() + 120_000));
    const pausing = manager.pause("s1");
    assert.equal(manager.get("s1").state, "pausing");
    assert.throws(() => manager.updateEndTime("s1", new Date(Date.now() + 60_000)), SandboxStateError);
    await pausing;
    const later = new Date(Date.now() + 600_000);
    manager.updateEndTime("s1", later);
    assert.equal(
      manager.get("s1").record.endTime,
      later.toISOString(),
      "a paused sandbox keeps it for its resume",
    );
  });

  test("a resume that fails: still paused with its image, and the attempt's runtime released", async () => {
    await manager.create(input("s1"));
    await manager.pause("s1");
    factory.failNext.add("init");
    await assert.rejects(manager.resume("s1", new Date(Date.now() + 60_000)), ResumeFailedError);
    assert.equal(manager.get("s1").state, "paused");
    assert.equal(factory.live.size, 0);
    assert.equal((await record("s1")).memory, true);
    await manager.resume("s1", new Date(Date.now() + 60_000));
    assert.equal(manager.get("s1").state, "running");
  });

  test("operations in the wrong state are refused; a kill works from running and paused", async () => {
    await manager.create(input("s1"));
    await assert.rejects(manager.resume("s1", new Date()), SandboxStateError);
    await manager.pause("s1");
    await assert.rejects(manager.pause("s1"), SandboxStateError);
    await manager.kill("s1");
    assert.throws(() => manager.get("s1"));
    await manager.releases();
    await assert.rejects(record("s1"), { code: "ENOENT" });
    await manager.create(input("s2"));
    await manager.kill("s2", "expired", "end time reached");
    assert.deepEqual(
      events.filter((e) => e.type === "killed" || e.type === "expired").map((e) => e.sandboxID),
      ["s1", "s2"],
    );
    await manager.releases();
    assert.equal(factory.live.size, 0);
  });

  test("a kill answers once the runtime is stopped; the release runs on and holds its place until it ends", async () => {
    manager = start({ maxSandboxes: 2 });
    await manager.create(input("s1"));
    await manager.create(input("s2"));
    let open!: () => void;
    factory.releaseGate = new Promise((r) => {
      open = r;
    });
    // A second kill of the same sandbox answers with the first.
    await Promise.all([manager.kill("s1"), manager.kill("s1")]);
    assert.deepEqual(
      factory.calls.filter((c) => c.endsWith(":s1") && /^(stop|release)/.test(c)),
      ["stop:s1", "release:s1"],
      "stopped once, its release began",
    );
    assert.ok(factory.stopped.has("s1"));
    assert.throws(() => manager.get("s1"), "gone from the registry at once");
    assert.equal(events.filter((e) => e.type === "killed").length, 1);
    // Until its release ends: its network is held, its record says stopping (a crash releases
    // it), the node counts it, and a create of its id waits.
    assert.ok(factory.live.has("s1"));
    assert.equal((await record("s1")).state, "stopping");
    await assert.rejects(manager.create(input("s3")), NodeBusyError);
    let again = false;
    const recreate = manager.create(input("s1")).then(() => {
      again = true;
    });
    await new Promise((r) => setTimeout(r, 50));
    assert.equal(again, false, "a create of a killed sandbox's id waits for its release");
    open();
    await manager.releases();
    assert.equal(factory.live.has("s1"), false);
    await recreate;
    assert.equal(
      manager.get("s1").state,
      "running",
      "the new sandbox of that id, not touched by the old release",
    );
    factory.releaseGate = undefined;
    await manager.kill("s1");
    await manager.kill("s2");
    await manager.releases();
    assert.equal(factory.live.size, 0);
    await assert.rejects(record("s1"), { code: "ENOENT" });
  });

  test("a kill whose stop fails releases everything before it answers", async () => {
    await manager.create(input("s1"));
    factory.failNext.add("stop");
    await manager.kill("s1");
    assert.equal(factory.live.size, 0, "released before the answer");
    await assert.rejects(record("s1"), { code: "ENOENT" });
    assert.deepEqual(
      events.filter((e) => e.type === "killed").map((e) => e.sandboxID),
      ["s1"],
    );
  });

  test("a paused sandbox's kill answers at once and leaves its record stopping until released", async () => {
    await manager.create(input("s1"));
    await manager.pause("s1");
    let open!: () => void;
    factory.releaseGate = new Promise((r) => {
      open = r;
    });
    await manager.kill("s1");
    assert.equal((await record("s1")).state, "stopping", "a restart releases it, not keeps it paused");
    open();
    await manager.releases();
    await assert.rejects(record("s1"), { code: "ENOENT" });
  });

  test("the end time kills the sandbox, or pauses it when it asked for auto-pause", async () => {
    await manager.create(input("s1", { endTime: new Date(Date.now() + 50) }));
    await manager.create(input("s2", { endTime: new Date(Date.now() + 50), autoPause: true }));
    // Either may end before the other is even created on a loaded machine: the order is not the point.
    const ended = () => events.filter((e) => e.type !== "created");
    for (let i = 0; i < 500 && ended().length < 3; i++) await new Promise((r) => setTimeout(r, 20));
    assert.deepEqual(
      ended()
        .map((e) => [e.sandboxID, e.type])
        .sort(),
      [
        ["s1", "expired"],
        ["s2", "paused"],
        ["s2", "pausing"],
      ],
    );
    assert.equal(manager.get("s2").state, "paused");
  });

  test("the watchdog releases a sandbox whose runtime died, with a failed event", async () => {
    factory.runtimePID = DEAD_PID;
    await manager.create(input("s1"));
    for (let i = 0; i < 100 && !events.some((e) => e.type === "failed"); i++) {
      await new Promise((r) => setTimeout(r, 50));
    }
    assert.deepEqual(events.at(-1), {
      ...events.at(-1),
      sandboxID: "s1",
      type: "failed",
      reason: "sandbox runtime exited (out of memory or crashed)",
    });
    assert.throws(() => manager.get("s1"));
  });
});
