/**
 * UpdateNetwork on the node (sandbox/network-update.ts) on a fake runtime: when the rules are
 * applied, what the record keeps, and what a bad or failed update leaves.
 */
import assert from "node:assert/strict";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, beforeEach, describe, test } from "node:test";
import { createNoopLogger } from "@moat/shared";
import type { Runsc } from "../src/runtime/runsc.js";
import { InvalidSandboxConfigError, SandboxNotFoundError } from "../src/sandbox/errors.js";
import { SandboxManager } from "../src/sandbox/manager.js";
import { FakeFactory } from "./fakes/factory.js";
import { BASE, createInput as input } from "./fakes/inputs.js";

describe("UpdateNetwork on the node", () => {
  const dirs: string[] = [];
  let dataDir: string;
  let factory: FakeFactory;
  let manager: SandboxManager;

  const record = async (id: string) =>
    JSON.parse(await readFile(path.join(dataDir, "sandboxes", id, "sandbox.json"), "utf8")) as {
      allowInternetAccess: boolean;
      allowOut?: string[];
      denyOut?: string[];
    };

  beforeEach(async () => {
    dataDir = await mkdtemp(path.join(tmpdir(), "moat-network-update-"));
    dirs.push(dataDir);
    factory = new FakeFactory();
    manager = new SandboxManager({
      dataDir,
      runsc: {} as Runsc,
      templates: { resolve: (id: string) => (id === "base" ? BASE : undefined) },
      nodeBinary: "/usr/bin/node",
      envdDir: "/nonexistent",
      logger: createNoopLogger(),
      maxSandboxes: 10,
      maxStarting: 4,
      pidsLimit: 100,
      envdReadyTimeoutMs: 1000,
      poolSize: 0,
      diskSizeMB: 0,
      factory,
    });
  });

  after(async () => {
    await manager?.close();
    await Promise.all(dirs.map((d) => rm(d, { recursive: true, force: true })));
  });

  test("a create's rules are checked and kept in its record", async () => {
    await assert.rejects(
      manager.create(input("bad", { allowOut: ["example.com"] })),
      (err: unknown) => err instanceof InvalidSandboxConfigError && /0\.0\.0\.0\/0/.test(err.message),
    );
    await manager.create(input("s1", { allowOut: ["example.com"], denyOut: ["0.0.0.0/0"] }));
    const kept = await record("s1");
    assert.deepEqual([kept.allowOut, kept.denyOut], [["example.com"], ["0.0.0.0/0"]]);
  });

  test("a running sandbox: applied at once, then recorded; a bad rule changes nothing", async () => {
    await manager.create(input("s1"));
    factory.calls.length = 0;
    await manager.updateNetwork("s1", { allowInternetAccess: false, allowOut: ["1.1.1.1"] });
    assert.deepEqual(factory.calls, ["egress:s1"]);
    const { allowInternetAccess, allowOut, denyOut } = await record("s1");
    assert.deepEqual(
      { allowInternetAccess, allowOut, denyOut },
      { allowInternetAccess: false, allowOut: ["1.1.1.1"], denyOut: [] },
    );
    await assert.rejects(
      manager.updateNetwork("s1", { allowInternetAccess: true, denyOut: ["10.0.0.0/33"] }),
      InvalidSandboxConfigError,
    );
    assert.deepEqual(factory.calls, ["egress:s1"]);
    assert.equal((await record("s1")).allowInternetAccess, false);
    await assert.rejects(manager.updateNetwork("nope", { allowInternetAccess: true }), SandboxNotFoundError);
  });

  test("a failed apply puts the previous rules back", async () => {
    await manager.create(input("s1", { denyOut: ["8.8.8.8"] }));
    const apply = factory.applyEgress.bind(factory);
    let fail = true;
    factory.applyEgress = async (sandbox) => {
      if (fail) {
        fail = false;
        throw new Error("nft failed");
      }
      return apply(sandbox);
    };
    await assert.rejects(manager.updateNetwork("s1", { allowInternetAccess: false }), /nft failed/);
    const r = manager.get("s1").record;
    assert.deepEqual([r.allowInternetAccess, r.denyOut], [true, ["8.8.8.8"]]);
    assert.deepEqual((await record("s1")).denyOut, ["8.8.8.8"]);
  });

  test("a paused sandbox: recorded only, for its resume", async () => {
    await manager.create(input("s1"));
    await manager.pause("s1");
    factory.calls.length = 0;
    await manager.updateNetwork("s1", { allowInternetAccess: true, denyOut: ["0.0.0.0/0"] });
    assert.deepEqual(factory.calls, [], "nothing runs to apply them to");
    assert.deepEqual((await record("s1")).denyOut, ["0.0.0.0/0"]);
    await manager.resume("s1", new Date(Date.now() + 60_000));
    assert.deepEqual(manager.get("s1").record.denyOut, ["0.0.0.0/0"]);
  });
});
