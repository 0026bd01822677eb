/**
 * Forks and snapshots through the API on the fake node: the statuses and bodies the SDK reads,
 * the records (forks are sandboxes of the team, snapshots templates of it), quotas, and that no
 * team reaches another's sandboxes or snapshots. The unmodified SDK checks the wire at the end.
 */
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { Code } from "@connectrpc/connect";
import { createNoopLogger } from "@moat/shared";
import { RateLimitError, Sandbox, SandboxError, SandboxNotFoundError } from "e2b";
import { type RunningAPI, startAPI } from "../src/index.js";
import { NodeClient } from "../src/orchestrator/node-client.js";
import { sweepUnfinishedSnapshots } from "../src/snapshot/sweep.js";
import { FakeOrchestrator } from "./fakes/fake-orchestrator.js";
import {
  type Backend,
  backends,
  createSandbox,
  POSTGRES_OFF,
  startTestAPI,
  type TestAPI,
} from "./helpers.js";

interface ErrorBody {
  code: number;
  message: string;
}
interface SnapshotInfo {
  snapshotID: string;
  names: string[];
}
type ForkResult = {
  sandbox?: { sandboxID: string; envdAccessToken?: string; templateID: string };
  error?: ErrorBody;
};

for (const backend of backends) {
  describe(`forks and snapshots (${backend.name})`, {
    skip: backend.name === "postgres" && POSTGRES_OFF,
  }, () => {
    suite(backend);
  });
}

function suite(backend: Backend): void {
  let t: TestAPI;
  let other: { teamID: string; apiKey: string };
  before(async () => {
    t = await startTestAPI(backend, { quotas: { maxSandboxes: 6, maxSnapshots: 3 } as never });
    other = await t.newTeam("other");
  });
  after(() => t.close());

  const fork = (id: string, json: unknown = {}, key?: string) =>
    t.request(`/sandboxes/${id}/fork`, { method: "POST", json, key });
  const snapshot = (id: string, json: unknown = {}, key?: string) =>
    t.request(`/sandboxes/${id}/snapshots`, { method: "POST", json, key });
  const list = async (query = "", key?: string) => {
    const res = await t.request(`/snapshots${query}`, { key });
    assert.equal(res.status, 200, await res.clone().text());
    return { items: (await res.json()) as SnapshotInfo[], next: res.headers.get("x-next-token") };
  };
  const record = (id: string) =>
    t.api.db.selectFrom("sandboxes").selectAll().where("sandbox_id", "=", id).executeTakeFirstOrThrow();
  const expectError = async (res: Response, status: number, pattern?: RegExp) => {
    const body = (await res.json()) as ErrorBody;
    assert.equal(res.status, status, body.message);
    assert.equal(body.code, status);
    if (pattern) assert.match(body.message, pattern);
    return body;
  };
  const removeAll = async () => {
    for (const id of [...t.fake.sandboxes.keys()]) await t.request(`/sandboxes/${id}`, { method: "DELETE" });
  };

  test("a fork of 3: sandboxes of the team like the source, with their own ids, tokens and end time", async () => {
    const source = await createSandbox(t, {
      metadata: { owner: "alice" },
      network: { allowPublicTraffic: false },
    });
    const started = Date.now();
    const res = await fork(source.sandboxID, { count: 3, timeout: 120 });
    assert.equal(res.status, 201);
    const results = (await res.json()) as ForkResult[];
    assert.equal(results.length, 3);
    const ids = new Set<string>();
    for (const r of results) {
      assert.ok(r.sandbox && !r.error, JSON.stringify(r));
      const row = await record(r.sandbox.sandboxID);
      ids.add(row.sandbox_id);
      assert.equal(row.state, "running");
      assert.equal(row.team_id, t.teamID);
      assert.deepEqual(row.metadata, { owner: "alice" });
      assert.equal(row.template_id, "base");
      assert.ok(row.envd_access_token && row.envd_access_token !== source.envdAccessToken);
      assert.equal(r.sandbox.envdAccessToken, row.envd_access_token);
      assert.ok(
        row.traffic_access_token && row.traffic_access_token !== (source.trafficAccessToken as string),
      );
      assert.ok(Math.abs(row.end_at.getTime() - (started + 120_000)) < 5_000);
      // The node was asked for each, with its own token.
      assert.equal(t.fake.sandboxes.get(row.sandbox_id)?.config.envdAccessToken, row.envd_access_token);
    }
    assert.equal(ids.size, 3);
    assert.ok(!ids.has(source.sandboxID));
    assert.equal((await record(source.sandboxID)).state, "running", "the source runs on");
    assert.equal(t.fake.count("fork", source.sandboxID), 1, "one snapshot for every fork");
    await removeAll();
  });

  test("fork: unknown, another team's, paused, between states, bad counts and timeouts", async () => {
    const source = await createSandbox(t);
    await expectError(await fork("nosuchsandbox"), 404);
    await expectError(await fork(source.sandboxID, {}, other.apiKey), 404);
    await expectError(await fork(source.sandboxID, { count: 0 }), 400, /count must be an integer from 1/);
    await expectError(await fork(source.sandboxID, { count: -3 }), 400);
    await expectError(await fork(source.sandboxID, { count: 6 }), 400, /lower than the team's maximum/);
    await expectError(await fork(source.sandboxID, { count: 1.5 }), 400);
    await expectError(await fork(source.sandboxID, { timeout: 10 * 86_400 }), 400);
    await expectError(await fork(source.sandboxID, { count: 1, extra: true }), 400);
    // 5 running would be 6 with the source plus another: past maxSandboxes (6), nothing attempted.
    await createSandbox(t);
    await expectError(await fork(source.sandboxID, { count: 5 }), 429, /maximum number of concurrent/);
    assert.equal(t.fake.count("fork"), 1, "only the earlier test's fork reached the node");
    await t.request(`/sandboxes/${source.sandboxID}/pause`, { method: "POST", json: {} });
    await expectError(await fork(source.sandboxID), 409, /paused: resume it/);
    t.fake.failNext("fork", Code.FailedPrecondition, "sandbox is snapshotting");
    const again = await createSandbox(t);
    await expectError(await fork(again.sandboxID), 409, /try again/);
    const killed = await t.api.db
      .selectFrom("sandboxes")
      .select("sandbox_id")
      .where("state", "=", "starting")
      .execute();
    assert.deepEqual(killed, [], "a failed fork leaves no record starting");
    await removeAll();
  });

  test("a fork whose one sandbox failed: the others run; the failed one is an error and closed", async () => {
    const source = await createSandbox(t);
    t.fake.failForks.set(1, {
      code: "resource_exhausted",
      message: "node busy: 16 sandboxes already starting",
    });
    const results = (await (await fork(source.sandboxID, { count: 2 })).json()) as ForkResult[];
    assert.ok(results[0]!.sandbox);
    assert.deepEqual(results[1]!.sandbox, undefined);
    assert.equal(results[1]!.error?.code, 429);
    assert.match(results[1]!.error!.message, /node busy/);
    const rows = await t.api.db
      .selectFrom("sandboxes")
      .select(["state", "stop_reason"])
      .where("stop_reason", "like", "fork failed: node busy%")
      .execute();
    assert.equal(rows.length, 1);
    assert.equal(rows[0]!.state, "killed");
    await removeAll();
  });

  test("snapshots: named and not, listed, filtered, paged, started from, deleted; the source runs on", async () => {
    const source = await createSandbox(t);
    const unnamedRes = await snapshot(source.sandboxID);
    assert.equal(unnamedRes.status, 201);
    const unnamed = (await unnamedRes.json()) as SnapshotInfo;
    assert.match(unnamed.snapshotID, /^[a-z0-9]{20}:default$/);
    assert.deepEqual(unnamed.names, []);
    const named = (await (await snapshot(source.sandboxID, { name: "snap-a" })).json()) as SnapshotInfo;
    assert.deepEqual(named, { snapshotID: "default/snap-a:default", names: ["default/snap-a"] });
    assert.equal((await record(source.sandboxID)).state, "running");

    const all = await list();
    assert.deepEqual(
      all.items.map((s) => s.snapshotID),
      [named.snapshotID, unnamed.snapshotID],
      "newest first",
    );
    assert.deepEqual((await list(`?sandboxID=${source.sandboxID}`)).items.length, 2);
    assert.deepEqual((await list("?sandboxID=nosuchsandbox")).items, []);
    assert.deepEqual((await list("?name=snap-a")).items, [named]);
    assert.deepEqual((await list("?name=default/snap-a:default")).items, [named]);
    assert.deepEqual((await list("?name=snap-a-does-not-exist")).items, []);
    assert.deepEqual((await list("?name=other/snap-a")).items, [], "another namespace");
    assert.deepEqual((await list("?name=..%2Fbad name")).items, []);
    const first = await list("?limit=1");
    assert.deepEqual(first.items, [named]);
    assert.ok(first.next);
    const second = await list(`?limit=1&nextToken=${first.next}`);
    assert.deepEqual(second.items, [unnamed]);
    assert.equal(second.next, null);
    await expectError(await t.request("/snapshots?nextToken=garbage"), 400);

    // Sandboxes start from either, by id or by name, secured (the snapshot's envd holds a token).
    for (const reference of [unnamed.snapshotID, named.snapshotID, "snap-a"]) {
      const res = await t.request("/sandboxes", { method: "POST", json: { templateID: reference } });
      assert.equal(res.status, 201, await res.clone().text());
      const created = (await res.json()) as { sandboxID: string; envdAccessToken?: string };
      assert.ok(created.envdAccessToken, "a token even through the insecure first API");
      const config = t.fake.sandboxes.get(created.sandboxID)!.config;
      assert.ok(config.snapshotId && t.fake.snapshots.has(config.snapshotId));
      assert.equal(config.buildId, "");
    }
    // A snapshot outlives its source.
    assert.equal((await t.request(`/sandboxes/${source.sandboxID}`, { method: "DELETE" })).status, 204);
    assert.equal(
      (await t.request("/v2/sandboxes", { method: "POST", json: { templateID: "snap-a" } })).status,
      201,
    );
    // Snapshots are not among the templates.
    const templates = (await (await t.request("/v2/templates")).json()) as unknown[];
    assert.deepEqual(templates, []);

    assert.equal(
      (await t.request(`/templates/${encodeURIComponent(named.snapshotID)}`, { method: "DELETE" })).status,
      204,
    );
    assert.equal(
      (await t.request(`/templates/${encodeURIComponent(unnamed.snapshotID)}`, { method: "DELETE" })).status,
      204,
    );
    await expectError(
      await t.request(`/templates/${encodeURIComponent(named.snapshotID)}`, { method: "DELETE" }),
      404,
    );
    assert.deepEqual((await list()).items, []);
    assert.equal(t.fake.snapshots.size, 0, "the node's copies are gone");
    await expectError(
      await t.request("/v2/sandboxes", { method: "POST", json: { templateID: "snap-a" } }),
      404,
    );
    await removeAll();
  });

  test("snapshot names: a template's is a 409, a reused one a new snapshot; malformed names a 400", async () => {
    const source = await createSandbox(t);
    const built = await t.request("/v3/templates", {
      method: "POST",
      json: { name: "my-template", cpuCount: 1, memoryMB: 512 },
    });
    assert.equal(built.status, 202, await built.clone().text());
    await expectError(await snapshot(source.sandboxID, { name: "my-template" }), 409, /taken by a template/);
    const one = (await (await snapshot(source.sandboxID, { name: "again:v1" })).json()) as SnapshotInfo;
    assert.equal(one.snapshotID, "default/again:v1");
    const two = (await (await snapshot(source.sandboxID, { name: "again" })).json()) as SnapshotInfo;
    assert.equal(two.snapshotID, "default/again:default");
    assert.deepEqual((await list("?name=again")).items, [two], "one snapshot of that name, its newest");
    // A template build under a snapshot's name is refused the other way round.
    await expectError(
      await t.request("/v3/templates", {
        method: "POST",
        json: { name: "again", cpuCount: 1, memoryMB: 512 },
      }),
      409,
      /name of a snapshot/,
    );
    for (const name of [
      "../x",
      "UPPER CASE!",
      "base",
      "code-interpreter-v1",
      "other-team/x",
      "abcdefghij0123456789",
      "",
    ]) {
      await expectError(await snapshot(source.sandboxID, { name }), 400);
    }
    await expectError(await snapshot(source.sandboxID, { name: 7 }), 400);
    await expectError(
      await t.request("/v2/templates/again", { method: "PATCH", json: { public: true } }),
      400,
      /cannot be made public/,
    );
    assert.equal((await t.request("/templates/again", { method: "DELETE" })).status, 204);
    assert.equal((await t.request("/templates/my-template", { method: "DELETE" })).status, 204);
    await removeAll();
  });

  test("snapshots: another team's cannot be taken, listed, started from or deleted", async () => {
    const source = await createSandbox(t);
    const mine = (await (await snapshot(source.sandboxID, { name: "private-snap" })).json()) as SnapshotInfo;
    await expectError(await snapshot(source.sandboxID, {}, other.apiKey), 404);
    assert.deepEqual((await list("", other.apiKey)).items, []);
    assert.deepEqual((await list(`?sandboxID=${source.sandboxID}`, other.apiKey)).items, []);
    assert.deepEqual((await list(`?name=${encodeURIComponent(mine.snapshotID)}`, other.apiKey)).items, []);
    const templateID = (
      await t.api.db
        .selectFrom("templates")
        .select("template_id")
        .where("name", "=", "private-snap")
        .executeTakeFirstOrThrow()
    ).template_id;
    for (const reference of [mine.snapshotID, "private-snap", templateID, `${templateID}:default`]) {
      await expectError(
        await t.request("/v2/sandboxes", {
          method: "POST",
          json: { templateID: reference },
          key: other.apiKey,
        }),
        404,
      );
      await expectError(
        await t.request(`/templates/${encodeURIComponent(reference)}`, {
          method: "DELETE",
          key: other.apiKey,
        }),
        404,
      );
    }
    assert.equal(t.fake.snapshots.size, 1, "still there");
    // Even a row made public by hand is the owner's alone: refused before any node is asked.
    await t.api.db
      .updateTable("templates")
      .set({ public: true })
      .where("template_id", "=", templateID)
      .execute();
    const creates = t.fake.count("create");
    await expectError(
      await t.request("/v2/sandboxes", {
        method: "POST",
        json: { templateID: "default/private-snap" },
        key: other.apiKey,
      }),
      404,
    );
    assert.equal(t.fake.count("create"), creates);
    // Without a key nothing is listed, forked or snapshotted.
    for (const [route, method] of [
      ["/snapshots", "GET"],
      [`/sandboxes/${source.sandboxID}/fork`, "POST"],
      [`/sandboxes/${source.sandboxID}/snapshots`, "POST"],
    ] as const) {
      const init = method === "POST" ? { method, key: null, json: {} } : { method, key: null };
      await expectError(await t.request(route, init), 401);
    }
    assert.equal((await t.request(`/templates/${templateID}`, { method: "DELETE" })).status, 204);
    await removeAll();
  });

  test("snapshots: paused or unknown sources, the quota, and a failed node leaves nothing", async () => {
    const source = await createSandbox(t);
    await expectError(await snapshot("nosuchsandbox"), 404);
    t.fake.failNext(
      "snapshot",
      Code.Aborted,
      "snapshotting sandbox failed (disk full); it is still running, try again",
    );
    await expectError(await snapshot(source.sandboxID, { name: "will-fail" }), 500, /disk full/);
    assert.deepEqual((await list()).items, []);
    assert.equal(
      (await t.api.db.selectFrom("templates").select("name").where("name", "=", "will-fail").execute())
        .length,
      0,
      "no template left for a failed snapshot",
    );
    for (let i = 0; i < 3; i++) assert.equal((await snapshot(source.sandboxID)).status, 201);
    await expectError(await snapshot(source.sandboxID), 429, /maximum number of snapshots \(3\)/);
    for (const s of (await list()).items) {
      assert.equal(
        (await t.request(`/templates/${encodeURIComponent(s.snapshotID)}`, { method: "DELETE" })).status,
        204,
      );
    }
    await t.request(`/sandboxes/${source.sandboxID}/pause`, { method: "POST", json: {} });
    await expectError(await snapshot(source.sandboxID), 409, /paused: resume it/);
    await removeAll();
  });

  test("a snapshot an API process left half-taken is removed, from the node too", async () => {
    const source = await createSandbox(t);
    const hold = t.fake.holdNext("snapshot");
    const pending = snapshot(source.sandboxID, { name: "half" });
    await hold.reached;
    const node = new NodeClient({ id: "node-1", transport: t.fake.transport() });
    const ctx = { db: t.api.db, nodes: new Map([["node-1", node]]), logger: createNoopLogger() };
    assert.deepEqual(await sweepUnfinishedSnapshots(ctx), [], "young ones are left alone");
    assert.equal((await sweepUnfinishedSnapshots(ctx, new Date(Date.now() + 1000))).length, 1);
    hold.release();
    // The node made it after all; the record is gone, so the API removes the node's copy.
    await expectError(await pending, 409, /deleted while it was being taken/);
    assert.equal(t.fake.snapshots.size, 0);
    assert.deepEqual((await list()).items, []);
    await removeAll();
  });
}

describe("forks and snapshots with the e2b SDK (fake node)", () => {
  const fake = new FakeOrchestrator();
  let api: RunningAPI;
  let opts: { apiKey: string; apiUrl: string };

  before(async () => {
    api = await startAPI({
      dataDir: "/nonexistent-moat-test",
      databaseURL: "memory://",
      port: 0,
      orchestrators: [{ id: "node-1", transport: fake.transport() }],
      logger: createNoopLogger(),
      quotas: { maxSandboxes: 4 } as never,
    });
    const { apiKey } = await api.bootstrap();
    opts = { apiKey: apiKey!, apiUrl: api.url };
  });
  after(async () => {
    await api.close();
    fake.close();
  });

  test("fork, createSnapshot, listSnapshots, create from a snapshot, deleteSnapshot", async () => {
    const sbx = await Sandbox.create("base", opts);
    const forks = await sbx.fork({ count: 2, timeoutMs: 60_000 });
    assert.equal(forks.length, 2);
    for (const f of forks) {
      assert.ok(f instanceof Sandbox);
      assert.notEqual(f.sandboxId, sbx.sandboxId);
    }
    fake.failForks.set(0, { code: "internal", message: "restore failed" });
    const [failed] = await Sandbox.fork(sbx.sandboxId, { ...opts, count: 1 });
    assert.ok(failed instanceof SandboxError && /restore failed/.test(failed.message));
    await assert.rejects(sbx.fork({ count: 4 }), SandboxError);
    await assert.rejects(Sandbox.fork("nosuchsandbox", opts), SandboxNotFoundError);
    await Promise.all(forks.map((f) => (f as Sandbox).kill()));
    await Sandbox.create("base", opts);
    await Sandbox.create("base", opts);
    await assert.rejects(sbx.fork({ count: 2 }), RateLimitError);

    const snap = await sbx.createSnapshot({ name: "sdk-snap" });
    assert.equal(snap.snapshotId, "default/sdk-snap:default");
    assert.deepEqual(snap.names, ["default/sdk-snap"]);
    const listed = await Sandbox.listSnapshots({ ...opts, name: "sdk-snap" }).nextItems();
    assert.deepEqual(listed, [snap]);
    assert.deepEqual(await sbx.listSnapshots().nextItems(), [snap]);
    await assert.rejects(Sandbox.createSnapshot("nosuchsandbox", opts), SandboxNotFoundError);
    await assert.rejects(sbx.createSnapshot({ name: "Bad Name" }), /400: /);
    for (const id of fake.sandboxes.keys()) if (id !== sbx.sandboxId) await Sandbox.kill(id, opts);
    const fromSnapshot = await Sandbox.create(snap.snapshotId, opts);
    assert.ok(fromSnapshot.sandboxId);
    assert.equal(await Sandbox.deleteSnapshot(snap.snapshotId, opts), true);
    assert.equal(await Sandbox.deleteSnapshot(snap.snapshotId, opts), false);
  });
});
