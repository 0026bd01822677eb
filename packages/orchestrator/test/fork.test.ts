/**
 * Sandbox snapshots and forks on a fake runtime (sandbox/sandbox-snapshots.ts, sandbox/fork.ts):
 * states, records, files on disk, tokens, and what a failure halfway leaves. No root, no runsc.
 */
import assert from "node:assert/strict";
import { mkdir, mkdtemp, readdir, readFile, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, beforeEach, describe, test } from "node:test";
import { createNoopLogger } from "@moat/shared";
import type { Runsc } from "../src/runtime/runsc.js";
import type { CreateInput } from "../src/sandbox/create-input.js";
import {
  InvalidSandboxConfigError,
  SandboxStateError,
  SnapshotExistsError,
  SnapshotFailedError,
  SnapshotNotFoundError,
} from "../src/sandbox/errors.js";
import { Faults } from "../src/sandbox/faults.js";
import { type SandboxEvent, SandboxManager } from "../src/sandbox/manager.js";
import { SandboxSnapshots } from "../src/sandbox/sandbox-snapshots.js";
import type { TemplateBuild } from "../src/template/store.js";
import { FakeFactory } from "./fakes/factory.js";

const BASE = {
  templateID: "base",
  key: "base",
  dir: "/nonexistent/base",
  lowers: ["/nonexistent/base/rootfs"],
  vcpu: 1,
  memoryMB: 512,
  diskSizeMB: 0,
  env: { FROM_TEMPLATE: "1" },
} as unknown as TemplateBuild;

function input(sandboxID: string, extra: Partial<CreateInput> = {}): CreateInput {
  return {
    sandboxID,
    templateID: "base",
    teamID: "team-a",
    vcpu: 1,
    memoryMB: 512,
    diskSizeMB: 0,
    envVars: { WHO: sandboxID },
    metadata: { owner: "alice" },
    envdAccessToken: `token-${sandboxID}`,
    allowInternetAccess: false,
    defaultUser: "",
    defaultWorkdir: "",
    autoPause: true,
    endTime: new Date(Date.now() + 3_600_000),
    ...extra,
  };
}

describe("sandbox snapshots and forks on a fake runtime", () => {
  const dirs: string[] = [];
  let dataDir: string;
  let factory: FakeFactory;
  let manager: SandboxManager;
  let events: SandboxEvent[];

  function start(options: { maxSandboxes?: number } = {}): SandboxManager {
    const m = new SandboxManager({
      dataDir,
      runsc: {} as Runsc,
      templates: { resolve: (id: string) => (id === "base" ? BASE : undefined) },
      nodeBinary: "/usr/bin/node",
      envdDir: "/nonexistent",
      logger: createNoopLogger(),
      maxSandboxes: options.maxSandboxes ?? 10,
      maxStarting: 8,
      pidsLimit: 100,
      envdReadyTimeoutMs: 1000,
      poolSize: 0,
      diskSizeMB: 0,
      snapshotKey: "runtime-1",
      factory,
      forkConcurrency: 2,
    });
    m.subscribe((e) => events.push(e));
    return m;
  }

  const record = async (dir: string) =>
    JSON.parse(await readFile(path.join(dataDir, "sandboxes", dir, "sandbox.json"), "utf8")) as Record<
      string,
      unknown
    >;
  const snapshotDirs = async () => (await readdir(path.join(dataDir, "snapshots")).catch(() => [])).sort();

  beforeEach(async () => {
    dataDir = await mkdtemp(path.join(tmpdir(), "moat-fork-"));
    dirs.push(dataDir);
    factory = new FakeFactory();
    events = [];
    manager = start();
  });

  after(async () => {
    await manager?.close();
    await Promise.all(dirs.map((d) => rm(d, { recursive: true, force: true })));
  });

  test("a snapshot keeps the sandbox running and saves its settings, memory and files, root only", async () => {
    await manager.create(input("src"));
    const snapshot = await manager.snapshot("src", "snap-1");
    assert.equal(manager.get("src").state, "running");
    assert.equal((await record("src")).state, "running");
    assert.equal(snapshot.teamID, "team-a");
    assert.equal(snapshot.sourceSandboxID, "src");
    assert.equal(snapshot.accessToken, "token-src");
    assert.equal(snapshot.runtimeKey, "runtime-1");
    assert.equal(snapshot.ephemeral, false);
    // The source's settings, without its ids, token or the state of its run.
    assert.deepEqual(snapshot.config.envVars, { FROM_TEMPLATE: "1", WHO: "src" });
    assert.deepEqual(snapshot.config.lowers, BASE.lowers);
    for (const key of ["sandboxID", "envdAccessToken", "slotIndex", "lifecycleID", "state", "endTime"]) {
      assert.equal(key in snapshot.config, false, key);
    }
    const dir = path.join(dataDir, "snapshots", "snap-1");
    assert.equal((await stat(dir)).mode & 0o777, 0o700);
    assert.equal((await stat(path.join(dir, "snapshot.json"))).mode & 0o777, 0o600);
    assert.ok((await stat(path.join(dir, "memory"))).isDirectory(), "the memory image, committed");
    assert.equal(await readFile(path.join(dir, "upper", "source"), "utf8"), "src");
    assert.deepEqual(await snapshotDirs(), ["snap-1"]);
    await assert.rejects(manager.snapshot("src", "snap-1"), SnapshotExistsError);
    await assert.rejects(manager.snapshot("src", "../escape"), InvalidSandboxConfigError);
    assert.deepEqual(await snapshotDirs(), ["snap-1"]);
  });

  test("a create from a snapshot restores its memory and files with the source's settings and its own token", async () => {
    await manager.create(input("src"));
    await manager.snapshot("src", "snap-1");
    const sandbox = await manager.create(
      input("new1", { snapshotID: "snap-1", envVars: { EXTRA: "x" }, metadata: { m: "1" } }),
    );
    assert.equal(sandbox.state, "running");
    assert.equal(sandbox.record.startKind, "snapshot");
    assert.match(factory.bootImages.get("new1") ?? "", /snapshots\/snap-1\/memory$/);
    // The restored envd holds the source's token: the node proves it to give the new one.
    assert.equal(factory.initTokens.get("new1"), "token-src");
    assert.equal(sandbox.record.envdAccessToken, "token-new1");
    assert.deepEqual(sandbox.record.envVars, { FROM_TEMPLATE: "1", WHO: "src", EXTRA: "x" });
    assert.deepEqual(sandbox.record.lowers, BASE.lowers);
    assert.equal(
      await readFile(path.join(dataDir, "sandboxes", "new1", "upper", "source"), "utf8"),
      "src",
      "its writable layer is a copy of the snapshot's",
    );
    // The snapshot serves more than one sandbox, and outlives its source.
    await manager.kill("src");
    await manager.create(input("new2", { snapshotID: "snap-1" }));
    assert.ok(manager.lowersInUse().has(BASE.lowers[0]!));
  });

  test("a create from a snapshot: another team's reads as missing; sizes and security must fit", async () => {
    await manager.create(input("src"));
    await manager.snapshot("src", "snap-1");
    await assert.rejects(
      manager.create(input("x1", { snapshotID: "snap-1", teamID: "team-b" })),
      SnapshotNotFoundError,
    );
    await assert.rejects(manager.create(input("x2", { snapshotID: "nope" })), SnapshotNotFoundError);
    await assert.rejects(
      manager.create(input("x3", { snapshotID: "snap-1", memoryMB: 1024 })),
      InvalidSandboxConfigError,
    );
    await assert.rejects(
      manager.create(input("x4", { snapshotID: "snap-1", envdAccessToken: "" })),
      /secured snapshot needs an envd access token/,
    );
    for (const id of ["x1", "x2", "x3", "x4"]) assert.throws(() => manager.get(id));
    assert.deepEqual((await readdir(path.join(dataDir, "sandboxes"))).sort(), ["src"]);
  });

  test("a fork of 3: three sandboxes like the source with their own ids and tokens; the source runs on", async () => {
    await manager.create(input("src"));
    const endTime = new Date(Date.now() + 600_000);
    const outcomes = await manager.fork(
      "src",
      ["f1", "f2", "f3"].map((id) => ({ sandboxID: id, envdAccessToken: `token-${id}`, endTime })),
    );
    assert.deepEqual(
      outcomes.map((o) => o.sandbox?.id),
      ["f1", "f2", "f3"],
    );
    for (const o of outcomes) {
      const r = o.sandbox!.record;
      assert.equal(o.sandbox!.state, "running");
      assert.equal(r.envdAccessToken, `token-${r.sandboxID}`);
      assert.equal(factory.initTokens.get(r.sandboxID), "token-src");
      assert.equal(r.endTime, endTime.toISOString());
      // Everything else is the source's.
      assert.deepEqual(r.envVars, { FROM_TEMPLATE: "1", WHO: "src" });
      assert.deepEqual(r.metadata, { owner: "alice" });
      assert.equal(r.allowInternetAccess, false);
      assert.equal(r.autoPause, true);
      assert.equal(r.teamID, "team-a");
    }
    assert.equal(manager.get("src").state, "running");
    assert.deepEqual(await snapshotDirs(), [], "the fork's snapshot is gone");
    // A fork of a fork.
    const again = await manager.fork("f1", [{ sandboxID: "ff1", envdAccessToken: "token-ff1", endTime }]);
    assert.equal(again[0]!.sandbox?.id, "ff1");
    assert.equal(factory.initTokens.get("ff1"), "token-f1");
  });

  test("a fork whose one create fails: the others run, the failed one leaves nothing", async () => {
    await manager.create(input("src"));
    const endTime = new Date(Date.now() + 600_000);
    factory.failNext.add("init");
    const outcomes = await manager.fork(
      "src",
      ["f1", "f2"].map((id) => ({ sandboxID: id, envdAccessToken: `token-${id}`, endTime })),
    );
    const failed = outcomes.filter((o) => o.error);
    assert.equal(failed.length, 1);
    assert.match(failed[0]!.error!.message, /fake init failed/);
    assert.equal(outcomes.filter((o) => o.sandbox).length, 1);
    assert.deepEqual((await readdir(path.join(dataDir, "sandboxes"))).length, 2, "the source and one fork");
    assert.deepEqual(await snapshotDirs(), []);
    await assert.rejects(
      manager.fork("src", [{ sandboxID: "src", envdAccessToken: "", endTime }]),
      /already exists/,
    );
    await assert.rejects(manager.fork("src", []), InvalidSandboxConfigError);
  });

  test("a snapshot that fails leaves nothing and the sandbox running; one whose runtime died is released", async () => {
    await manager.create(input("src"));
    factory.failNext.add("snapshot");
    await assert.rejects(manager.snapshot("src", "snap-1"), SnapshotFailedError);
    assert.equal(manager.get("src").state, "running");
    assert.equal((await record("src")).state, "running");
    assert.deepEqual(await snapshotDirs(), []);

    // Stopped in place for good: released as failed, never left frozen.
    factory.failNext.add("snapshot");
    factory.running = false;
    await assert.rejects(
      manager.fork("src", [{ sandboxID: "f1", envdAccessToken: "", endTime: new Date(Date.now() + 60_000) }]),
      SnapshotFailedError,
    );
    await waitUntil(() => events.some((e) => e.type === "failed" && e.sandboxID === "src"));
    assert.throws(() => manager.get("src"));
    assert.deepEqual(await snapshotDirs(), []);
  });

  test("only a running sandbox is snapshotted; a pause during a snapshot is refused", async () => {
    await manager.create(input("src"));
    await manager.pause("src");
    await assert.rejects(manager.snapshot("src", "snap-1"), SandboxStateError);
    await manager.resume("src", new Date(Date.now() + 60_000));
    const taking = manager.snapshot("src", "snap-1");
    await assert.rejects(manager.pause("src"), SandboxStateError);
    await taking;
    await manager.pause("src");
  });

  test("at start, whole snapshots are kept; unfinished and fork ones are removed", async () => {
    await manager.create(input("src"));
    await manager.snapshot("src", "keep");
    await manager.snapshot("src", "fork-left", { ephemeral: true });
    await mkdir(path.join(dataDir, "snapshots", "half.partial", "memory"), { recursive: true });
    await mkdir(path.join(dataDir, "snapshots", "no-manifest"), { recursive: true });
    await writeFile(path.join(dataDir, "snapshots", "stray-file"), "x");
    const reloaded = new SandboxSnapshots({
      dataDir,
      factory,
      faults: new Faults(undefined, createNoopLogger()),
      logger: createNoopLogger(),
    });
    await reloaded.load();
    assert.deepEqual(
      reloaded.list().map((s) => s.snapshotID),
      ["keep"],
    );
    assert.deepEqual(await snapshotDirs(), ["keep"]);
    assert.equal(await manager.deleteSnapshot("keep"), true);
    assert.equal(await manager.deleteSnapshot("keep"), false);
    assert.deepEqual(await snapshotDirs(), []);
  });
});

async function waitUntil(check: () => boolean, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error("timed out");
    await new Promise((r) => setTimeout(r, 10));
  }
}
