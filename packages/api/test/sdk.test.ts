/**
 * The official e2b SDK against the API over real HTTP, with the fake orchestrator behind it: the
 * SDK's own requests, encodings and error handling, without a node. (tests/integration/api does
 * the same with a real orchestrator.)
 */
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { createLogger, createNoopLogger } from "@moat/shared";
import { AuthenticationError, NotFoundError, Sandbox, SandboxError, SandboxNotFoundError } from "e2b";
import { type RunningAPI, startAPI } from "../src/index.js";
import { FakeOrchestrator } from "./fakes/fake-orchestrator.js";

describe("the e2b SDK against the API (fake node)", () => {
  const fake = new FakeOrchestrator();
  let api: RunningAPI;
  let opts: { apiKey: string; apiUrl: string };
  let otherOpts: { apiKey: string; apiUrl: string };

  before(async () => {
    api = await startAPI({
      dataDir: "/nonexistent-moat-test",
      databaseURL: "memory://",
      port: 0,
      orchestrators: [{ id: "node-1", transport: fake.transport() }],
      logger: process.env.DEBUG_API ? createLogger("api", "debug") : createNoopLogger(),
    });
    const { apiKey } = await api.bootstrap();
    opts = { apiKey: apiKey!, apiUrl: api.url };
    const other = await api.createTeam("other");
    otherOpts = { apiKey: await api.createAPIKey(other.teamID), apiUrl: api.url };
  });
  after(async () => {
    await api.close();
    fake.close();
  });

  test("create, getInfo, list with filters, setTimeout, connect, kill", async () => {
    const sbx = await Sandbox.create("base", {
      ...opts,
      metadata: { "who am i": "a&b=c" },
      timeoutMs: 60_000,
    });
    assert.match(sbx.sandboxId, /^[a-z0-9]{20}$/);
    const info = await Sandbox.getInfo(sbx.sandboxId, opts);
    assert.equal(info.sandboxId, sbx.sandboxId);
    assert.equal(info.templateId, "base");
    assert.equal(info.name, "base");
    assert.equal(info.state, "running");
    assert.equal(info.envdVersion, "0.6.13");
    assert.deepEqual(info.metadata, { "who am i": "a&b=c" });
    assert.ok(info.endAt.getTime() - info.startedAt.getTime() <= 60_000);

    const listed = await Sandbox.list({
      ...opts,
      query: { metadata: { "who am i": "a&b=c" }, state: ["running"] },
    }).nextItems();
    assert.deepEqual(
      listed.map((s) => s.sandboxId),
      [sbx.sandboxId],
    );
    const none = await Sandbox.list({ ...opts, query: { metadata: { "who am i": "a" } } }).nextItems();
    assert.deepEqual(none, []);

    await Sandbox.setTimeout(sbx.sandboxId, 120_000, opts);
    const later = await Sandbox.getInfo(sbx.sandboxId, opts);
    assert.ok(later.endAt.getTime() - Date.now() > 110_000);

    const connected = await Sandbox.connect(sbx.sandboxId, opts);
    assert.equal(connected.sandboxId, sbx.sandboxId);

    assert.deepEqual(await Sandbox.getMetrics(sbx.sandboxId, opts), []);

    assert.equal(await Sandbox.kill(sbx.sandboxId, otherOpts), false, "another team cannot kill it");
    assert.equal(await Sandbox.kill(sbx.sandboxId, opts), true);
    assert.equal(await Sandbox.kill(sbx.sandboxId, opts), false);
    await assert.rejects(Sandbox.getInfo(sbx.sandboxId, opts), NotFoundError);
    await assert.rejects(Sandbox.setTimeout(sbx.sandboxId, 10_000, opts), NotFoundError);
    await assert.rejects(Sandbox.connect(sbx.sandboxId, opts), NotFoundError);
  });

  test("pause (true, then false), the paused list, connect resuming, kill of a paused sandbox", async () => {
    const sbx = await Sandbox.create("base", {
      ...opts,
      metadata: { suite: "pause" },
      lifecycle: { onTimeout: "pause", autoResume: true },
    });
    const id = sbx.sandboxId;
    const config = fake.sandboxes.get(id)!.config;
    assert.equal(config.autoPause, true);
    assert.equal(config.autoPauseMemory, true);
    assert.deepEqual((await sbx.getInfo()).lifecycle, { onTimeout: "pause", autoResume: true });

    assert.equal(await sbx.pause(), true);
    assert.equal(await sbx.pause(), false, "already paused");
    assert.equal((await Sandbox.getInfo(id, opts)).state, "paused");
    await assert.rejects(Sandbox.pause(id, otherOpts), SandboxNotFoundError, "another team's is not found");
    const query = (state?: Array<"running" | "paused">) =>
      Sandbox.list({ ...opts, query: { metadata: { suite: "pause" }, ...(state ? { state } : {}) } })
        .nextItems()
        .then((items) => items.map((s) => [s.sandboxId, s.state]));
    assert.deepEqual(await query(["paused"]), [[id, "paused"]]);
    assert.deepEqual(await query(["running"]), []);
    assert.deepEqual(await query(), [[id, "paused"]], "no state filter: both");

    const host = fake.sandboxes.get(id)!.hostAddress;
    assert.equal(host, "", "a paused sandbox has no address on its node");
    const resumed = await Sandbox.connect(id, { ...opts, timeoutMs: 90_000 });
    assert.equal(resumed.sandboxId, id);
    assert.equal((await Sandbox.getInfo(id, opts)).state, "running");
    assert.notEqual(fake.sandboxes.get(id)!.hostAddress, "");
    assert.deepEqual(await query(["running"]), [[id, "running"]]);
    assert.equal(fake.transitions.at(-1)?.method, "resume");

    await resumed.pause({ keepMemory: false });
    assert.deepEqual(fake.transitions.at(-1), { method: "pause", sandboxID: id, memory: false });
    await Sandbox.connect(id, { ...opts, onResume: "reboot" });
    assert.deepEqual(fake.transitions.at(-1), { method: "resume", sandboxID: id, reboot: true });

    await resumed.pause();
    assert.equal(await Sandbox.kill(id, opts), true, "a paused sandbox can be killed");
    assert.equal(fake.sandboxes.has(id), false);
    await assert.rejects(Sandbox.connect(id, opts), SandboxNotFoundError);
    await assert.rejects(Sandbox.pause(id, opts), SandboxNotFoundError);
  });

  test("paging through the SDK's paginator", async () => {
    const created = await Promise.all(
      Array.from({ length: 5 }, () => Sandbox.create("base", { ...opts, metadata: { batch: "paging" } })),
    );
    const paginator = Sandbox.list({ ...opts, limit: 2, query: { metadata: { batch: "paging" } } });
    const seen: string[] = [];
    while (paginator.hasNext) seen.push(...(await paginator.nextItems()).map((s) => s.sandboxId));
    assert.deepEqual(seen.sort(), created.map((s) => s.sandboxId).sort());
    await Promise.all(created.map((s) => s.kill()));
  });

  test("errors surface as the SDK's error classes", async () => {
    await assert.rejects(
      Sandbox.create("base", { ...opts, apiKey: "e2b_0000000000000000000000000000000000000000" }),
      AuthenticationError,
    );
    await assert.rejects(Sandbox.create("nosuchtemplate", opts), (err: Error) =>
      /404: template 'nosuchtemplate' not found/.test(err.message),
    );
    await assert.rejects(
      Sandbox.create("base", { ...opts, volumeMounts: { "/data": "vol" } }),
      (err: Error) =>
        err instanceof SandboxError && /400: volumeMounts: volume 'vol' not found/.test(err.message),
    );
  });
});
