/**
 * A fleet of registered nodes (fake ones, in memory): the heartbeat route and its token, the
 * registry that turns rows into clients, unhealthy nodes whose sandboxes are recorded lost (once,
 * across API processes; paused ones kept), creates that skip unhealthy and draining nodes, a node
 * that comes back and is reconciled, and the admin routes that drain it.
 */
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { createNoopLogger } from "@moat/shared";
import { type API, openAPI } from "../src/index.js";
import { FakeOrchestrator } from "./fakes/fake-orchestrator.js";
import { backends, eventually, POSTGRES_OFF } from "./helpers.js";

const NODE_TOKEN = "node-token-for-the-fleet-tests-0123456789";
const ADMIN_TOKEN = "admin-token-for-tests-0123456789";

function beat(overrides: Record<string, unknown> = {}) {
  return {
    rpcURL: "http://10.98.0.1:5008",
    proxyURL: "http://10.98.0.1:5007",
    version: "0.1.0",
    runtime: "runsc 0.0~20240729.0",
    labels: [],
    capacity: { cpus: 4, memoryMB: 8192 },
    load: { cpuPercent: 1, memoryUsedMB: 100, sandboxes: 0, starting: 0, poolReady: 2 },
    builds: [],
    ...overrides,
  };
}

interface Fleet {
  apis: API[];
  fakes: Map<string, FakeOrchestrator>;
  apiKey: string;
  drop(): Promise<void>;
}

async function openFleet(
  url: string,
  count: number,
  timeoutSeconds = TIMEOUT_SECONDS,
): Promise<Omit<Fleet, "drop">> {
  const fakes = new Map<string, FakeOrchestrator>();
  const apis: API[] = [];
  for (let i = 0; i < count; i++) {
    apis.push(
      await openAPI({
        dataDir: "/nonexistent-moat-test",
        databaseURL: url,
        orchestrators: [],
        nodeToken: NODE_TOKEN,
        adminToken: ADMIN_TOKEN,
        nodeHeartbeatTimeoutSeconds: timeoutSeconds,
        logger: createNoopLogger(),
        nodeTransport: (nodeID) => {
          let fake = fakes.get(nodeID);
          if (!fake) {
            fake = new FakeOrchestrator();
            fakes.set(nodeID, fake);
          }
          return fake.transport();
        },
      }),
    );
  }
  const boot = await apis[0]!.bootstrap();
  return { apis, fakes, apiKey: boot.apiKey! };
}

function heartbeat(api: API, nodeID: string, body: unknown, token: string | null = NODE_TOKEN) {
  return api.app.request(`/internal/nodes/${nodeID}`, {
    method: "PUT",
    headers: {
      "Content-Type": "application/json",
      ...(token === null ? {} : { Authorization: `Bearer ${token}` }),
    },
    body: JSON.stringify(body),
  });
}

async function create(api: API, apiKey: string): Promise<{ sandboxID: string; status: number }> {
  const res = await api.app.request("/v2/sandboxes", {
    method: "POST",
    headers: { "X-API-Key": apiKey, "Content-Type": "application/json" },
    body: JSON.stringify({ templateID: "base" }),
  });
  const body = (await res.json()) as { sandboxID: string; message?: string };
  return {
    sandboxID: body.sandboxID,
    status: res.status,
    ...(body.message ? { message: body.message } : {}),
  };
}

async function rowOf(api: API, sandboxID: string) {
  return api.db
    .selectFrom("sandboxes")
    .select(["state", "node_id", "stop_reason"])
    .where("sandbox_id", "=", sandboxID)
    .executeTakeFirstOrThrow();
}

function admin(api: API, method: string, path: string, json?: unknown) {
  return api.app.request(path, {
    method,
    headers: { "X-Admin-Token": ADMIN_TOKEN, ...(json ? { "Content-Type": "application/json" } : {}) },
    body: json ? JSON.stringify(json) : undefined,
  });
}

/** Ages a node's heartbeat by `seconds` (as if it stopped beating that long ago). */
async function ageHeartbeat(api: API, nodeID: string, seconds: number): Promise<void> {
  await api.db
    .updateTable("nodes")
    .set({ last_heartbeat: new Date(Date.now() - seconds * 1000) })
    .where("id", "=", nodeID)
    .execute();
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** The heartbeat timeout of the test APIs: long enough for a busy machine between beats. */
const TIMEOUT_SECONDS = 5;

/** Waits until an API opened at `openedAt` judges heartbeats (it has run for the timeout). */
async function untilJudging(openedAt: number): Promise<void> {
  await sleep(Math.max(0, openedAt + TIMEOUT_SECONDS * 1000 + 100 - Date.now()));
}

for (const backend of backends) {
  describe(`nodes (${backend.name})`, { skip: backend.name === "postgres" && POSTGRES_OFF }, () => {
    let fleet: Omit<Fleet, "drop">;
    let database: { url: string; drop(): Promise<void> };
    let openedAt = 0;
    before(async () => {
      database = await backend.database();
      fleet = await openFleet(database.url, 1);
      openedAt = Date.now();
    });
    after(async () => {
      for (const api of fleet.apis) await api.close();
      for (const fake of fleet.fakes.values()) fake.close();
      await database.drop();
    });

    test("the heartbeat route: 401 without or with a wrong token (before the body is read), 400 on junk", async () => {
      const api = fleet.apis[0]!;
      assert.equal((await heartbeat(api, "n1", beat(), null)).status, 401);
      assert.equal((await heartbeat(api, "n1", beat(), `${NODE_TOKEN}x`)).status, 401);
      assert.equal((await heartbeat(api, "n1", { junk: true }, null)).status, 401, "token first");
      for (const junk of [
        { junk: true },
        beat({ rpcURL: "file:///etc/passwd" }),
        beat({ labels: ["no spaces allowed"] }),
        beat({ capacity: { cpus: -1, memoryMB: 1 } }),
        beat({ load: { cpuPercent: 300, memoryUsedMB: 0, sandboxes: 0, starting: 0, poolReady: 0 } }),
        beat({ builds: Array.from({ length: 1001 }, (_, i) => `b${i}`) }),
      ]) {
        const res = await heartbeat(api, "n1", junk);
        assert.equal(res.status, 400, JSON.stringify(junk).slice(0, 80));
        const body = (await res.json()) as { code: number; message: string };
        assert.equal(body.code, 400);
      }
      assert.equal((await heartbeat(api, "bad id!", beat())).status, 400);
      const rows = await api.db.selectFrom("nodes").selectAll().execute();
      assert.equal(rows.length, 0, "nothing recorded");
    });

    test("a node that heartbeats is registered: its sandboxes go there; the admin routes list it", async () => {
      const api = fleet.apis[0]!;
      const res = await heartbeat(api, "n1", beat({ labels: ["build"], builds: ["b1"] }));
      assert.equal(res.status, 200);
      assert.deepEqual(await res.json(), { status: "ready" });
      await api.refreshNodes();
      const sbx = await create(api, fleet.apiKey);
      assert.equal(sbx.status, 201);
      assert.equal((await rowOf(api, sbx.sandboxID)).node_id, "n1");
      assert.ok(fleet.fakes.get("n1")?.sandboxes.has(sbx.sandboxID));

      const list = (await (await admin(api, "GET", "/nodes")).json()) as Array<Record<string, unknown>>;
      assert.equal(list.length, 1);
      assert.equal(list[0]!.nodeID, "n1");
      assert.equal(list[0]!.status, "ready");
      assert.deepEqual(list[0]!.labels, ["build"]);
      assert.equal(list[0]!.builds, 1);
      assert.equal(list[0]!.sandboxCount, 1);
      assert.equal((await admin(api, "GET", "/nodes/n1")).status, 200);
      assert.equal((await admin(api, "GET", "/nodes/nope")).status, 404);
      assert.equal((await api.app.request("/nodes")).status, 401, "admin token needed");
    });

    test("draining: no new sandboxes there, the ones it has run on; a heartbeat keeps it draining; ready again", async () => {
      const api = fleet.apis[0]!;
      await heartbeat(api, "n2", beat({ rpcURL: "http://10.98.0.2:5008" }));
      await api.refreshNodes();
      const res = await admin(api, "POST", "/nodes/n1", { status: "draining" });
      assert.equal(res.status, 200);
      assert.equal(((await res.json()) as { status: string }).status, "draining");
      assert.equal((await heartbeat(api, "n1", beat())).status, 200);
      assert.deepEqual(await (await heartbeat(api, "n1", beat())).json(), { status: "draining" });
      await api.refreshNodes();
      const before = fleet.fakes.get("n1")!.sandboxes.size;
      for (let i = 0; i < 4; i++) {
        const sbx = await create(api, fleet.apiKey);
        assert.equal(sbx.status, 201);
        assert.equal((await rowOf(api, sbx.sandboxID)).node_id, "n2");
      }
      assert.equal(fleet.fakes.get("n1")!.sandboxes.size, before, "the drained node's sandboxes run on");
      assert.equal((await admin(api, "POST", "/nodes/n1", { status: "bogus" })).status, 400);
      assert.equal((await admin(api, "POST", "/nodes/nope", { status: "ready" })).status, 404);
      assert.equal((await admin(api, "POST", "/nodes/n1", { status: "ready" })).status, 200);
      await api.refreshNodes();
      // n1 has fewer sandboxes now: the next create goes there.
      assert.equal((await rowOf(api, (await create(api, fleet.apiKey)).sandboxID)).node_id, "n1");
    });

    test("an unhealthy node: running sandboxes lost, paused ones kept, creates go elsewhere; back, it is reconciled", async () => {
      const api = fleet.apis[0]!;
      await heartbeat(api, "n3", beat({ rpcURL: "http://10.98.0.3:5008" }));
      await admin(api, "POST", "/nodes/n1", { status: "draining" });
      await admin(api, "POST", "/nodes/n2", { status: "draining" });
      await api.refreshNodes();
      const running = await create(api, fleet.apiKey);
      const paused = await create(api, fleet.apiKey);
      assert.equal(running.status, 201, JSON.stringify(running));
      assert.equal(paused.status, 201);
      assert.equal((await rowOf(api, running.sandboxID)).node_id, "n3");
      const pause = await api.app.request(`/sandboxes/${paused.sandboxID}/pause`, {
        method: "POST",
        headers: { "X-API-Key": fleet.apiKey },
      });
      assert.equal(pause.status, 204);
      const fake = fleet.fakes.get("n3")!;
      fake.setDown(true);
      // The API has run past the timeout itself, and the node's last beat is older.
      await untilJudging(openedAt);
      await ageHeartbeat(api, "n3", 60);
      await api.refreshNodes();
      const lost = await rowOf(api, running.sandboxID);
      assert.equal(lost.state, "killed");
      assert.match(lost.stop_reason ?? "", /lost: node 'n3' stopped sending heartbeats/);
      assert.equal((await rowOf(api, paused.sandboxID)).state, "paused", "paused sandboxes are not lost");
      const status = (await (await admin(api, "GET", "/nodes/n3")).json()) as { status: string };
      assert.equal(status.status, "unhealthy");
      // Every node is draining or unhealthy: no node takes the create.
      assert.equal((await create(api, fleet.apiKey)).status, 429);
      await admin(api, "POST", "/nodes/n2", { status: "ready" });
      await heartbeat(api, "n2", beat({ rpcURL: "http://10.98.0.2:5008" }));
      await api.refreshNodes();
      const elsewhere = await create(api, fleet.apiKey);
      assert.equal(elsewhere.status, 201, JSON.stringify(elsewhere));
      assert.equal((await rowOf(api, elsewhere.sandboxID)).node_id, "n2");

      // Back: ready, its watcher reconnects and reconciles: the lost sandbox, which survived, runs
      // again (its end time has not come), the paused one is adopted (kept).
      fake.setDown(false);
      assert.deepEqual(await (await heartbeat(api, "n3", beat({ rpcURL: "http://10.98.0.3:5008" }))).json(), {
        status: "ready",
      });
      await api.refreshNodes();
      await eventually(async () => (await rowOf(api, running.sandboxID)).state === "running", 10_000);
      assert.ok(fake.sandboxes.has(running.sandboxID), "the survivor is not killed");
      assert.equal((await rowOf(api, running.sandboxID)).stop_reason, null);
      assert.ok(fake.sandboxes.has(paused.sandboxID));
      assert.equal((await rowOf(api, paused.sandboxID)).state, "paused");
      const after = (await (await admin(api, "GET", "/nodes/n3")).json()) as { status: string };
      assert.equal(after.status, "ready");
    });
  });
}

describe("two API processes on one database (postgres)", { skip: POSTGRES_OFF }, () => {
  const postgres = backends.find((b) => b.name === "postgres");
  let fleet: Omit<Fleet, "drop">;
  let database: { url: string; drop(): Promise<void> };
  let openedAt = 0;
  before(async () => {
    database = await postgres!.database();
    fleet = await openFleet(database.url, 2);
    openedAt = Date.now();
  });
  after(async () => {
    for (const api of fleet.apis) await api.close();
    for (const fake of fleet.fakes.values()) fake.close();
    await database.drop();
  });

  test("a node registered through one API places through the other; its loss is recorded once", async () => {
    const [a, b] = fleet.apis as [API, API];
    await heartbeat(a, "n1", beat());
    await Promise.all([a.refreshNodes(), b.refreshNodes()]);
    const ids: string[] = [];
    for (let i = 0; i < 4; i++) ids.push((await create(i % 2 ? a : b, fleet.apiKey)).sandboxID);
    fleet.fakes.get("n1")!.setDown(true);
    await untilJudging(openedAt);
    await ageHeartbeat(a, "n1", 60);
    await Promise.all([a.refreshNodes(), b.refreshNodes(), a.refreshNodes()]);
    for (const id of ids) {
      assert.equal((await rowOf(a, id)).state, "killed");
      const logs = await a.db
        .selectFrom("sandbox_logs")
        .select("message")
        .where("sandbox_id", "=", id)
        .where("message", "=", "sandbox stopped")
        .execute();
      assert.equal(logs.length, 1, "recorded once");
    }
    const node = await a.db
      .selectFrom("nodes")
      .select("status")
      .where("id", "=", "n1")
      .executeTakeFirstOrThrow();
    assert.equal(node.status, "unhealthy");
  });
});
