/**
 * Several API processes on one PostgreSQL: per-sandbox locks that hold across processes
 * (advisory locks), and creates whose API process died, closed by another process, with what the
 * node made of them killed.
 */
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { createNoopLogger } from "@moat/shared";
import { type API, openAPI } from "../src/index.js";
import { MemoryLocks, PostgresLocks, type SandboxLocks } from "../src/sandbox/locks.js";
import { FakeOrchestrator } from "./fakes/fake-orchestrator.js";
import { backends, POSTGRES_OFF } from "./helpers.js";

const postgres = backends.find((b) => b.name === "postgres");
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Runs two works on one key through two lock holders; answers whether they overlapped. */
async function overlapped(a: SandboxLocks, b: SandboxLocks, key: string): Promise<boolean> {
  let inside = 0;
  let overlap = false;
  const work = async () => {
    inside++;
    if (inside > 1) overlap = true;
    await sleep(50);
    inside--;
  };
  await Promise.all([a.run(key, work), b.run(key, work), a.run(key, work), b.run(key, work)]);
  return overlap;
}

describe("sandbox locks", () => {
  test("in memory: one process's works on a key never overlap; two processes' would", async () => {
    const a = new MemoryLocks();
    assert.equal(await overlapped(a, a, "sbx"), false);
    assert.equal(await overlapped(a, new MemoryLocks(), "sbx"), true, "the reason for advisory locks");
  });

  test("PostgreSQL: two processes never overlap on a key; other keys run side by side; released after a throw", {
    skip: POSTGRES_OFF,
  }, async () => {
    const database = await postgres!.database();
    const a = new PostgresLocks(database.url);
    const b = new PostgresLocks(database.url);
    try {
      assert.equal(await overlapped(a, b, "sbx-1"), false);
      // Different keys: both inside at once.
      let inside = 0;
      let both = false;
      const work = async () => {
        inside++;
        if (inside === 2) both = true;
        await sleep(50);
        inside--;
      };
      await Promise.all([a.run("sbx-2", work), b.run("sbx-3", work)]);
      assert.ok(both);
      await assert.rejects(
        a.run("sbx-4", async () => {
          throw new Error("work failed");
        }),
        /work failed/,
      );
      // The lock was released: the other process takes it at once.
      const started = Date.now();
      await b.run("sbx-4", async () => undefined);
      assert.ok(Date.now() - started < 2_000);
    } finally {
      await a.close();
      await b.close();
      await database.drop();
    }
  });
});

describe("two API processes on one PostgreSQL", { skip: POSTGRES_OFF }, () => {
  const fake = new FakeOrchestrator();
  let database: { url: string; drop(): Promise<void> };
  let a: API;
  let b: API;
  let apiKey: string;
  const open = () =>
    openAPI({
      dataDir: "/nonexistent-moat-test",
      databaseURL: database.url,
      orchestrators: [{ id: "node-1", transport: fake.transport() }],
      logger: createNoopLogger(),
    });
  const request = (api: API, path: string, method: string, json?: unknown) =>
    api.app.request(path, {
      method,
      headers: { "X-API-Key": apiKey, "Content-Type": "application/json" },
      body: json === undefined ? undefined : JSON.stringify(json),
    });

  before(async () => {
    database = await postgres!.database();
    a = await open();
    b = await open();
    apiKey = (await a.bootstrap()).apiKey!;
  });
  after(async () => {
    await a.close();
    await b.close();
    fake.close();
    await database.drop();
  });

  test("end-time changes of one sandbox from two processes reach the node one at a time", async () => {
    const res = await request(a, "/v2/sandboxes", "POST", { templateID: "base" });
    const { sandboxID } = (await res.json()) as { sandboxID: string };
    const held = fake.holdNext("updateEndTime");
    const first = request(a, `/sandboxes/${sandboxID}/timeout`, "POST", { timeout: 100 });
    await held.reached;
    const second = request(b, `/sandboxes/${sandboxID}/timeout`, "POST", { timeout: 200 });
    await sleep(300);
    assert.equal(fake.count("updateEndTime", sandboxID), 1, "the other process waits for the lock");
    held.release();
    assert.equal((await first).status, 204);
    assert.equal((await second).status, 204);
    assert.equal(fake.count("updateEndTime", sandboxID), 2);
    const end = fake.sandboxes.get(sandboxID)!.endTime.getTime();
    assert.ok(end > Date.now() + 150_000, "the later change is the one in force");
  });

  test("a create whose API process died is closed by another, and killed on the node", async () => {
    const make = async () => {
      const res = await request(a, "/v2/sandboxes", "POST", { templateID: "base" });
      assert.equal(res.status, 201);
      return ((await res.json()) as { sandboxID: string }).sandboxID;
    };
    // Two creates the node finished whose processes never recorded it: one of a process that
    // stopped heartbeating (a, as if killed), one of a process that still runs (b).
    const abandoned = await make();
    const underWay = await make();
    const instanceOf = async (api: API) => {
      const rows = await api.db.selectFrom("api_instances").select("id").execute();
      return rows.map((r) => r.id);
    };
    assert.equal((await instanceOf(a)).length, 2, "both processes heartbeat");
    const aID = (await a.db
      .selectFrom("sandboxes")
      .select("api_instance_id")
      .where("sandbox_id", "=", abandoned)
      .executeTakeFirstOrThrow())!.api_instance_id!;
    const bID = (await instanceOf(b)).find((id) => id !== aID)!;
    await a.db
      .updateTable("sandboxes")
      .set({ state: "starting" })
      .where("sandbox_id", "in", [abandoned, underWay])
      .execute();
    await a.db
      .updateTable("sandboxes")
      .set({ api_instance_id: bID })
      .where("sandbox_id", "=", underWay)
      .execute();
    await a.db
      .updateTable("api_instances")
      .set({ heartbeat_at: new Date(Date.now() - 3600_000) })
      .where("id", "=", aID)
      .execute();

    assert.deepEqual(await b.sweepAbandonedCreates(), [abandoned]);
    const closed = await b.db
      .selectFrom("sandboxes")
      .select(["state", "stop_reason"])
      .where("sandbox_id", "=", abandoned)
      .executeTakeFirstOrThrow();
    assert.equal(closed.state, "killed");
    assert.match(closed.stop_reason ?? "", /its API process stopped/);
    assert.equal(fake.sandboxes.has(abandoned), false, "killed on the node");
    assert.equal(fake.sandboxes.has(underWay), true);
    const kept = await b.db
      .selectFrom("sandboxes")
      .select("state")
      .where("sandbox_id", "=", underWay)
      .executeTakeFirstOrThrow();
    assert.equal(kept.state, "starting", "a live process's create is left to it");
    // A second sweep (another process) finds nothing more.
    assert.deepEqual(await a.sweepAbandonedCreates(), []);
  });
});
