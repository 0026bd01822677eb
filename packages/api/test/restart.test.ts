/**
 * The embedded database under the data directory across restarts, and the reconcile with the node
 * that follows: what changed on the node while the API was down reaches the records.
 */
import assert from "node:assert/strict";
import { mkdtemp, readdir, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { createClient } from "@connectrpc/connect";
import { createNoopLogger } from "@moat/shared";
import { SandboxService } from "@moat/shared/gen/orchestrator";
import { sql } from "kysely";
import { type API, openAPI } from "../src/index.js";
import { FakeOrchestrator } from "./fakes/fake-orchestrator.js";
import { eventually } from "./helpers.js";

describe("restart on the same data directory (PGlite on disk)", () => {
  const fake = new FakeOrchestrator();
  let dataDir: string;
  const open = () =>
    openAPI({
      dataDir,
      orchestrators: [{ id: "node-1", transport: fake.transport() }],
      logger: createNoopLogger(),
    });

  before(async () => {
    dataDir = await mkdtemp(path.join(tmpdir(), "moat-api-test-"));
  });
  after(async () => {
    fake.close();
    await rm(dataDir, { recursive: true, force: true });
  });

  test("keys and sandboxes survive; the node's changes while down are reconciled", async () => {
    let api: API = await open();
    const { teamID, apiKey } = await api.bootstrap();
    assert.ok(apiKey);
    assert.ok(
      (await readdir(path.join(dataDir, "db"))).includes("PG_VERSION"),
      "the database lives in <dataDir>/db",
    );
    const headers = { "X-API-Key": apiKey, "Content-Type": "application/json" };
    const create = async () => {
      const res = await api.app.request("/v2/sandboxes", {
        method: "POST",
        headers,
        body: JSON.stringify({ templateID: "base" }),
      });
      assert.equal(res.status, 201);
      return ((await res.json()) as { sandboxID: string }).sandboxID;
    };
    const diedWhileDown = await create();
    const survivor = await create();
    const abandoned = await create();
    const interrupted = await create();
    // A create the API gave up on although the node went on to start it.
    await api.db
      .updateTable("sandboxes")
      .set({ state: "killed" })
      .where("sandbox_id", "=", abandoned)
      .execute();
    // A create that was under way when the previous API process died (just now: with PGlite,
    // the database's only user, no other process can finish it).
    await sql`update sandboxes set state = 'starting' where sandbox_id = ${interrupted}`.execute(api.db);
    await api.close();

    fake.dropSilently(diedWhileDown);
    const bare = "startedbysomethingelse";
    await createClient(SandboxService, fake.transport()).create({
      sandbox: { sandboxId: bare, templateId: "base" },
      endTime: timestampFromDate(new Date(Date.now() + 60_000)),
    });

    api = await open();
    try {
      assert.deepEqual(await api.bootstrap(), { teamID }, "the same team, no new key");
      const get = (id: string) => api.app.request(`/sandboxes/${id}`, { headers });
      assert.equal((await get(survivor)).status, 200, "the old key still works");
      await eventually(async () => (await get(diedWhileDown)).status === 404);
      await eventually(async () => !fake.sandboxes.has(abandoned));
      await eventually(async () => !fake.sandboxes.has(interrupted));
      const stuck = await api.db
        .selectFrom("sandboxes")
        .select(["state", "stop_reason"])
        .where("sandbox_id", "=", interrupted)
        .executeTakeFirst();
      assert.deepEqual(stuck, { state: "killed", stop_reason: "create did not finish" });
      assert.ok(fake.sandboxes.has(survivor));
      assert.ok(fake.sandboxes.has(bare), "sandboxes the API never made are left alone");
      const kill = await api.app.request(`/sandboxes/${survivor}`, { method: "DELETE", headers });
      assert.equal(kill.status, 204);
    } finally {
      await api.close();
    }
  });

  test("paused sandboxes stay paused across a restart; pauses and resumes missed while down are reconciled", async () => {
    let api: API = await open();
    const apiKey = await api.createAPIKey((await api.bootstrap()).teamID);
    const headers = { "X-API-Key": apiKey, "Content-Type": "application/json" };
    const request = (path: string, method = "GET") =>
      api.app.request(path, { method, headers, body: method === "POST" ? "{}" : undefined });
    const create = async () => {
      const res = await api.app.request("/v2/sandboxes", {
        method: "POST",
        headers,
        body: JSON.stringify({ templateID: "base" }),
      });
      assert.equal(res.status, 201);
      return ((await res.json()) as { sandboxID: string }).sandboxID;
    };
    const keptPaused = await create();
    const autoPausedWhileDown = await create();
    const resumedWhileDown = await create();
    const lostWhilePaused = await create();
    const stuckPausing = await create();
    for (const id of [keptPaused, resumedWhileDown, lostWhilePaused]) {
      assert.equal((await request(`/sandboxes/${id}/pause`, "POST")).status, 204);
    }
    // A pause whose API process died before it reached the node.
    await api.db
      .updateTable("sandboxes")
      .set({ state: "pausing" })
      .where("sandbox_id", "=", stuckPausing)
      .execute();
    await api.close();

    fake.pauseOutOfBand(autoPausedWhileDown, { silently: true });
    fake.resumeOutOfBand(resumedWhileDown);
    fake.dropSilently(lostWhilePaused);

    api = await open();
    try {
      const state = async (id: string) => {
        const res = await request(`/sandboxes/${id}`);
        return res.status === 200 ? ((await res.json()) as { state: string }).state : res.status;
      };
      const record = (id: string) =>
        api.db
          .selectFrom("sandboxes")
          .select(["state", "host_address"])
          .where("sandbox_id", "=", id)
          .executeTakeFirstOrThrow();
      await eventually(async () => (await record(autoPausedWhileDown)).state === "paused");
      await eventually(async () => (await record(resumedWhileDown)).state === "running");
      await eventually(async () => (await record(stuckPausing)).state === "running");
      await eventually(async () => (await state(lostWhilePaused)) === 404);
      assert.equal(await state(keptPaused), "paused", "the node's paused sandbox stays paused");
      assert.equal(fake.sandboxes.get(keptPaused)?.state, "paused");
      assert.equal((await record(autoPausedWhileDown)).host_address, null);
      assert.equal(
        (await record(resumedWhileDown)).host_address,
        fake.sandboxes.get(resumedWhileDown)!.hostAddress,
      );
      assert.equal((await api.catalog.lookup(resumedWhileDown))?.state, "running");
      assert.equal((await request(`/v2/sandboxes/${keptPaused}/connect`, "POST")).status, 201);
      for (const id of [keptPaused, autoPausedWhileDown, resumedWhileDown, stuckPausing]) {
        assert.equal((await request(`/sandboxes/${id}`, "DELETE")).status, 204);
      }
    } finally {
      await api.close();
    }
  });
});
