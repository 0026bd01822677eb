/**
 * The official e2b SDK against the API started in-process on a real orchestrator (gVisor
 * sandboxes). SDK calls to the API go through E2B_API_URL/E2B_API_KEY; envd calls go straight to
 * the sandbox's host address (`sandboxUrl`), since no client proxy runs here, and authenticate
 * with the envd access token the API issued.
 */
import assert from "node:assert/strict";
import { before, describe, test } from "node:test";
import { type RunningAPI, startAPI } from "@moat/api";
import { createLogger, ENVD_VERSION } from "@moat/shared";
import { NotFoundError, Sandbox } from "e2b";
import { withOrchestrator } from "../helpers/with-orchestrator.js";

const ENV_KEYS = ["E2B_API_URL", "E2B_API_KEY", "E2B_SANDBOX_URL", "E2B_DEBUG", "E2B_DOMAIN"] as const;

/** Polls getInfo until the API answers NotFound for the sandbox. */
async function eventuallyNotFound(sandboxID: string, timeoutMs = 30_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      await Sandbox.getInfo(sandboxID);
    } catch (err) {
      assert.ok(err instanceof NotFoundError, `expected NotFoundError, got ${err}`);
      return;
    }
    assert.ok(Date.now() < deadline, `sandbox ${sandboxID} should be gone`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

describe("API: the e2b SDK on a real node", { timeout: 600_000 }, () => {
  let api: RunningAPI;
  let otherKey: string;
  const savedEnv = new Map<string, string | undefined>();
  const orch = withOrchestrator({
    beforeTeardown: async () => {
      for (const [key, value] of savedEnv) {
        if (value === undefined) delete process.env[key];
        else process.env[key] = value;
      }
      await api?.close();
    },
  });

  before(async () => {
    api = await startAPI({
      dataDir: orch.dataDir,
      port: 0,
      host: "127.0.0.1",
      orchestrators: [{ id: "node-1", url: `http://127.0.0.1:${orch.port}`, token: orch.token }],
      logger: createLogger("api", process.env.MOAT_TEST_API_LOGS ? "debug" : "warn"),
    });
    const boot = await api.bootstrap();
    assert.ok(boot.apiKey, "a fresh data directory bootstraps a key");
    const other = await api.createTeam("other");
    otherKey = await api.createAPIKey(other.teamID);
    for (const key of ENV_KEYS) savedEnv.set(key, process.env[key]);
    for (const key of ENV_KEYS) delete process.env[key];
    process.env.E2B_API_URL = api.url;
    process.env.E2B_API_KEY = boot.apiKey;
  });

  /** The SDK's sandbox object aimed at the sandbox's envd on the node (no proxy here). */
  async function direct(sbx: Sandbox, envdAccessToken: string | undefined): Promise<Sandbox> {
    const entry = await api.catalog.lookup(sbx.sandboxId);
    assert.ok(entry, "the catalog knows the sandbox");
    assert.equal(entry.state, "running");
    return new Sandbox({
      sandboxId: sbx.sandboxId,
      envdVersion: ENVD_VERSION,
      envdAccessToken,
      sandboxUrl: `http://${entry.hostAddress}:49983`,
    });
  }

  test("create: a running sandbox whose envd takes the API's token and env vars", async () => {
    const sbx = await Sandbox.create({
      metadata: { suite: "api", case: "create" },
      envs: { GREETING: "hi there" },
    });
    try {
      assert.match(sbx.sandboxId, /^[a-z0-9]{20}$/);
      const info = await sbx.getInfo();
      assert.equal(info.sandboxId, sbx.sandboxId);
      assert.equal(info.templateId, "base");
      assert.equal(info.state, "running");
      assert.equal(info.envdVersion, ENVD_VERSION, "envdVersion comes from the node");
      assert.deepEqual(info.metadata, { suite: "api", case: "create" });
      const lifetime = info.endAt.getTime() - info.startedAt.getTime();
      assert.ok(lifetime > 290_000 && lifetime <= 300_000, `default timeout 300 s, got ${lifetime} ms`);

      const token = (sbx as unknown as { envdAccessToken?: string }).envdAccessToken;
      assert.ok(token, "the API issued an envd access token");
      const inside = await direct(sbx, token);
      const out = await inside.commands.run("echo $GREETING $E2B_SANDBOX_ID; whoami");
      assert.equal(out.stdout, `hi there ${sbx.sandboxId}\nuser\n`);
      const noToken = await direct(sbx, undefined);
      await assert.rejects(noToken.commands.run("true"), /401|unauthori[sz]ed|access token/i);

      // The node samples every few seconds (MOAT_METRICS_INTERVAL, 5 s by default).
      let metrics = await sbx.getMetrics();
      for (let i = 0; i < 40 && metrics.length === 0; i++) {
        await new Promise((r) => setTimeout(r, 250));
        metrics = await sbx.getMetrics();
      }
      assert.ok(metrics.length >= 1, "a reading sampled from the sandbox's envd");
      assert.ok(metrics[0]!.memTotal > 0 && metrics[0]!.cpuCount > 0);
    } finally {
      await sbx.kill();
    }
  });

  test("list filters by metadata and state", async () => {
    const [a, b] = await Promise.all([
      Sandbox.create({ metadata: { suite: "api", case: "list", who: "a b&c" } }),
      Sandbox.create({ metadata: { suite: "api", case: "list", who: "d" } }),
    ]);
    try {
      const byCase = await Sandbox.list({
        query: { metadata: { case: "list" }, state: ["running"] },
      }).nextItems();
      assert.deepEqual(byCase.map((s) => s.sandboxId).sort(), [a!.sandboxId, b!.sandboxId].sort());
      const byWho = await Sandbox.list({ query: { metadata: { who: "a b&c" } } }).nextItems();
      assert.deepEqual(
        byWho.map((s) => s.sandboxId),
        [a!.sandboxId],
      );
      assert.deepEqual(await Sandbox.list({ query: { state: ["paused"] } }).nextItems(), []);
      const paged = Sandbox.list({ limit: 1, query: { metadata: { case: "list" } } });
      const seen: string[] = [];
      while (paged.hasNext) seen.push(...(await paged.nextItems()).map((s) => s.sandboxId));
      assert.equal(seen.length, 2);
      const theirs = await Sandbox.list({ apiKey: otherKey }).nextItems();
      assert.deepEqual(theirs, [], "another team sees none of them");
    } finally {
      await Promise.all([a!.kill(), b!.kill()]);
    }
  });

  test("setTimeout moves the end time on the node; connect reaches the sandbox", async () => {
    const sbx = await Sandbox.create({ timeoutMs: 60_000 });
    try {
      await sbx.setTimeout(600_000);
      const info = await Sandbox.getInfo(sbx.sandboxId);
      assert.ok(info.endAt.getTime() - Date.now() > 590_000);
      const onNode = (await orch.client.get({ sandboxId: sbx.sandboxId })).sandbox!;
      const nodeEnd = Number(onNode.endTime!.seconds) * 1000;
      assert.ok(Math.abs(nodeEnd - info.endAt.getTime()) < 1500, "the node enforces the same end time");

      const entry = await api.catalog.lookup(sbx.sandboxId);
      const connected = await Sandbox.connect(sbx.sandboxId, {
        sandboxUrl: `http://${entry!.hostAddress}:49983`,
      });
      assert.equal((await connected.commands.run("echo connected")).stdout, "connected\n");
    } finally {
      await sbx.kill();
    }
  });

  test("kill: another team cannot; the owner can, once", async () => {
    const sbx = await Sandbox.create();
    assert.equal(await Sandbox.kill(sbx.sandboxId, { apiKey: otherKey }), false);
    await assert.rejects(Sandbox.getInfo(sbx.sandboxId, { apiKey: otherKey }), NotFoundError);
    assert.ok((await orch.client.list({})).sandboxes.some((s) => s.config!.sandboxId === sbx.sandboxId));
    assert.equal(await Sandbox.kill(sbx.sandboxId), true);
    assert.ok(!(await orch.client.list({})).sandboxes.some((s) => s.config!.sandboxId === sbx.sandboxId));
    await assert.rejects(Sandbox.getInfo(sbx.sandboxId), NotFoundError);
    assert.equal(await Sandbox.kill(sbx.sandboxId), false);
  });

  test("the API follows the node: kills on the node itself, and across an orchestrator restart", async () => {
    const sbx = await Sandbox.create();
    await orch.client.delete({ sandboxId: sbx.sandboxId });
    await eventuallyNotFound(sbx.sandboxId);

    const survivor = await Sandbox.create();
    try {
      await orch.restart();
      // The event stream reconnects; what happens on the node afterwards still reaches the API.
      assert.equal(
        (await Sandbox.getInfo(survivor.sandboxId)).state,
        "running",
        "adopted by the new orchestrator",
      );
      const short = await Sandbox.create({ timeoutMs: 2_000 });
      await eventuallyNotFound(short.sandboxId);
    } finally {
      await survivor.kill();
    }
  });

  test("a sandbox past its timeout is gone: getInfo throws NotFound, list omits it", async () => {
    const sbx = await Sandbox.create({ timeoutMs: 3_000, metadata: { case: "expiry" } });
    await eventuallyNotFound(sbx.sandboxId);
    assert.deepEqual(await Sandbox.list({ query: { metadata: { case: "expiry" } } }).nextItems(), []);
    assert.equal(await Sandbox.kill(sbx.sandboxId), false);
    assert.ok(!(await orch.client.list({})).sandboxes.some((s) => s.config!.sandboxId === sbx.sandboxId));
  });
});
