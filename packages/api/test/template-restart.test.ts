/**
 * Template builds across API restarts (PGlite on disk): a build the API was running when it
 * stopped ends in error ("interrupted"), whether the API closed or died; builds another live
 * process runs, and builds never started, are left alone. Signed URLs outlive the restart.
 */
import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import { createNoopLogger } from "@moat/shared";
import { sql } from "kysely";
import { type API, openAPI } from "../src/index.js";
import { FakeOrchestrator } from "./fakes/fake-orchestrator.js";

describe("template builds across a restart (PGlite on disk)", () => {
  const fake = new FakeOrchestrator();
  let dataDir: string;
  let apiKey: string;
  let api: API;
  const open = () =>
    openAPI({
      dataDir,
      orchestrators: [{ id: "node-1", transport: fake.transport() }],
      logger: createNoopLogger(),
    });
  const request = (p: string, init: { method?: string; json?: unknown; body?: string } = {}) =>
    api.app.request(p, {
      method: init.method,
      headers: { "X-API-Key": apiKey, "Content-Type": "application/json" },
      body: init.json === undefined ? init.body : JSON.stringify(init.json),
    });
  const requestBuild = async (name: string) => {
    const res = await request("/v3/templates", { method: "POST", json: { name } });
    assert.equal(res.status, 202);
    return (await res.json()) as { templateID: string; buildID: string };
  };
  const status = async (ids: { templateID: string; buildID: string }) => {
    const res = await request(`/templates/${ids.templateID}/builds/${ids.buildID}/status`);
    assert.equal(res.status, 200);
    return (await res.json()) as { status: string; reason?: { message: string } };
  };

  before(async () => {
    dataDir = await mkdtemp(path.join(tmpdir(), "moat-api-template-restart-"));
    api = await open();
    apiKey = (await api.bootstrap()).apiKey!;
    fake.templates.fetchFile = (url) => {
      const parsed = new URL(url);
      return Promise.resolve(api.app.request(parsed.pathname + parsed.search));
    };
  });
  after(async () => {
    await api.close();
    fake.close();
    await rm(dataDir, { recursive: true, force: true });
  });

  test("a build running when the API closes is interrupted; the node's build is cancelled", async () => {
    const hold = fake.templates.holdNext();
    const ids = await requestBuild("closing");
    const start = await request(`/v2/templates/${ids.templateID}/builds/${ids.buildID}`, {
      method: "POST",
      json: { fromImage: "e2bdev/base" },
    });
    assert.equal(start.status, 202);
    await hold.reached;
    assert.equal((await status(ids)).status, "building");
    await api.close();
    assert.ok(fake.templates.cancelled.includes(ids.buildID));
    hold.release();

    api = await open();
    const after = await status(ids);
    assert.equal(after.status, "error");
    assert.match(after.reason?.message ?? "", /interrupted: the API process running it stopped/);
  });

  test("builds of a process that died are interrupted at the next start, however fresh their heartbeat; unstarted ones stay", async () => {
    const died = await requestBuild("died");
    const alive = await requestBuild("alive");
    const unstarted = await requestBuild("unstarted");
    // As a process left them: started, with heartbeats it stopped refreshing long ago or just now
    // (it was SIGKILLed). PGlite has one user, this process: no other process can be running them.
    await sql`update template_builds set status = 'building', started_at = now() - interval '10 minutes',
      heartbeat_at = now() - interval '5 minutes' where build_id = ${died.buildID}`.execute(api.db);
    await sql`update template_builds set status = 'building', started_at = now() - interval '10 minutes',
      heartbeat_at = now() where build_id = ${alive.buildID}`.execute(api.db);
    await api.close();

    api = await open();
    const interrupted = await status(died);
    assert.equal(interrupted.status, "error");
    assert.match(interrupted.reason?.message ?? "", /interrupted/);
    assert.equal((await status(alive)).status, "error", "no other process can be running it");
    assert.equal((await status(unstarted)).status, "waiting");
    const start = await request(`/v2/templates/${unstarted.templateID}/builds/${unstarted.buildID}`, {
      method: "POST",
      json: { fromImage: "e2bdev/base" },
    });
    assert.equal(start.status, 202, "a requested build can still start after a restart");
  });

  test("an upload URL signed before the restart is good after it", async () => {
    const ids = await requestBuild("signed");
    const hash = "a".repeat(64);
    const link = await request(`/templates/${ids.templateID}/files/${hash}`);
    const url = new URL(((await link.json()) as { url: string }).url);
    await api.close();
    api = await open();
    const put = await api.app.request(url.pathname + url.search, { method: "PUT", body: "files" });
    assert.equal(put.status, 200);
    const again = await request(`/templates/${ids.templateID}/files/${hash}`);
    assert.deepEqual(await again.json(), { present: true });
  });
});
