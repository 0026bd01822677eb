/**
 * Sandboxes from built templates: a create names the template by id, name, name:tag or team/name;
 * the node gets the build and the template's resources; the sandbox is placed on the node that has
 * the build. The base template stays as it was.
 */
import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import { Code } from "@connectrpc/connect";
import { createNoopLogger } from "@moat/shared";
import { type API, openAPI } from "../src/index.js";
import { FakeOrchestrator } from "./fakes/fake-orchestrator.js";
import { backends, createSandbox } from "./helpers.js";
import {
  buildTemplate,
  requestBuild,
  startBuild,
  startTemplateTestAPI,
  type TemplateTestAPI,
  waitForBuild,
} from "./template-helpers.js";

for (const backend of backends) {
  describe(`sandboxes from templates (${backend.name})`, () => {
    let t: TemplateTestAPI;
    before(async () => {
      t = await startTemplateTestAPI(backend);
    });
    after(() => t.close());

    test("a create by name passes the build and the template's resources; responses name the template", async () => {
      const built = await buildTemplate(
        t,
        "web",
        { fromImage: "e2bdev/base", steps: [{ type: "WORKDIR", args: ["/srv"] }] },
        { cpuCount: 4, memoryMB: 2048 },
      );
      const sbx = await createSandbox(t, { templateID: "web" });
      assert.equal(sbx.templateID, built.templateID);
      assert.equal(sbx.alias, "web");
      const config = t.fake.sandboxes.get(sbx.sandboxID)!.config;
      assert.equal(config.templateId, built.templateID);
      assert.equal(config.buildId, built.buildID);
      assert.equal(config.vcpu, 4);
      assert.equal(config.memoryMb, 2048);
      assert.equal(config.defaultUser, "user");
      assert.equal(config.defaultWorkdir, "/srv");

      const detail = (await (await t.request(`/sandboxes/${sbx.sandboxID}`)).json()) as Record<
        string,
        unknown
      >;
      assert.equal(detail.templateID, built.templateID);
      assert.equal(detail.alias, "web");
      assert.equal(detail.cpuCount, 4);
      assert.equal(detail.memoryMB, 2048);

      for (const reference of [built.templateID, "web:default", "default/web", `${t.teamID}/web`]) {
        const other = await createSandbox(t, { templateID: reference });
        assert.equal(t.fake.sandboxes.get(other.sandboxID)!.config.buildId, built.buildID, reference);
      }
      const v1 = await t.request("/sandboxes", { method: "POST", json: { templateID: "web", timeout: 60 } });
      assert.equal(v1.status, 201);
      assert.equal(((await v1.json()) as { templateID: string }).templateID, built.templateID);

      const listed = (await (await t.request("/v2/templates")).json()) as Array<Record<string, unknown>>;
      const web = listed.find((x) => x.templateID === built.templateID)!;
      assert.equal(web.spawnCount, 6);
      assert.ok(typeof web.lastSpawnedAt === "string");
      const filtered = (await (await t.request("/v2/sandboxes?template=web")).json()) as unknown[];
      assert.equal(filtered.length, 6, "the list's template filter takes the name");
    });

    test("a tag names the build it was given to; default the latest ready one", async () => {
      const v1 = await buildTemplate(t, "tagged:v1");
      const v2 = await buildTemplate(t, "tagged", undefined, { tags: ["v2"] });
      t.fake.templates.failNext(0, "broken");
      const broken = await buildTemplate(t, "tagged:v1", {
        fromImage: "e2bdev/base",
        steps: [{ type: "RUN", args: ["false"] }],
      });
      assert.equal(broken.info.status, "error");
      const buildOf = async (templateID: string) =>
        t.fake.sandboxes.get((await createSandbox(t, { templateID })).sandboxID)!.config.buildId;
      assert.equal(await buildOf("tagged:v1"), v1.buildID, "a failed build under the tag leaves it");
      assert.equal(await buildOf("tagged:v2"), v2.buildID);
      assert.equal(await buildOf("tagged"), v2.buildID);
      const missing = await t.request("/v2/sandboxes", { method: "POST", json: { templateID: "tagged:v3" } });
      assert.equal(missing.status, 404);
      assert.match(((await missing.json()) as { message: string }).message, /no ready build tagged 'v3'/);
    });

    test("templates without a ready build, unknown ones and junk are 404", async () => {
      const pending = await requestBuild(t, { name: "pending" });
      const creates = t.fake.count("create");
      const create = (templateID: string) =>
        t.request("/v2/sandboxes", { method: "POST", json: { templateID } });
      const notReady = await create("pending");
      assert.equal(notReady.status, 404);
      const body = (await notReady.json()) as { code: number; message: string };
      assert.equal(body.code, 404);
      assert.match(body.message, /template 'pending' has no ready build/);
      assert.equal((await create(pending.templateID)).status, 404);
      for (const junk of ["nosuch", "a/b/c", "UPPER:case:x", "x".repeat(200)]) {
        assert.equal((await create(junk)).status, 404, junk);
      }
      assert.equal(t.fake.count("create"), creates, "nothing reached the node");
    });

    test("the base template is unchanged: no build, 2 vCPU and 512 MB", async () => {
      const sbx = await createSandbox(t, { templateID: "base" });
      const config = t.fake.sandboxes.get(sbx.sandboxID)!.config;
      assert.equal(config.templateId, "base");
      assert.equal(config.buildId, "");
      assert.equal(config.vcpu, 2);
      assert.equal(config.memoryMb, 512);
      assert.equal(sbx.alias, "base");
    });

    test("another team uses a public template as team/name or by id, never a private one", async () => {
      const built = await buildTemplate(t, "shared");
      const other = await t.newTeam("Other Team");
      const create = (templateID: string) =>
        t.request("/v2/sandboxes", { method: "POST", json: { templateID }, key: other.apiKey });
      assert.equal((await create("default/shared")).status, 404, "private");
      assert.equal((await create(built.templateID)).status, 404, "private");
      assert.equal((await create("shared")).status, 404, "a bare name is the caller's own");
      const patch = await t.request(`/v2/templates/${built.templateID}`, {
        method: "PATCH",
        json: { public: true },
      });
      assert.equal(patch.status, 200);
      assert.equal((await create("default/shared")).status, 201);
      assert.equal((await create(built.templateID)).status, 201);
      assert.equal((await create("shared")).status, 404);
    });
  });
}

describe("templates on several nodes", () => {
  const fakes = [new FakeOrchestrator(), new FakeOrchestrator()];
  let api: API;
  let dataDir: string;
  let apiKey: string;
  const request = (p: string, init: { method?: string; json?: unknown } = {}) =>
    api.app.request(p, {
      method: init.method,
      headers: { "X-API-Key": apiKey, "Content-Type": "application/json" },
      body: init.json === undefined ? undefined : JSON.stringify(init.json),
    });
  const t = () => ({ request }) as unknown as TemplateTestAPI;

  before(async () => {
    dataDir = await mkdtemp(path.join(tmpdir(), "moat-api-nodes-"));
    api = await openAPI({
      dataDir,
      databaseURL: "memory://",
      orchestrators: fakes.map((f, i) => ({ id: `node-${i + 1}`, transport: f.transport() })),
      logger: createNoopLogger(),
      watchNodes: false,
    });
    apiKey = (await api.bootstrap()).apiKey!;
  });
  after(async () => {
    await api.close();
    for (const f of fakes) f.close();
    await rm(dataDir, { recursive: true, force: true });
  });

  test("a node that cannot take a build is swapped; the build's sandboxes and children go to its node", async () => {
    const [first, second] = fakes as [FakeOrchestrator, FakeOrchestrator];
    // Placement takes node-1 first; it is unreachable, so the build moves to node-2.
    first.templates.failNextCall(Code.Unavailable, "connection refused");
    const built = await requestBuild(t(), { name: "placed" });
    assert.equal((await startBuild(t(), built, { fromImage: "e2bdev/base" })).status, 202);
    assert.equal((await waitForBuild(t(), built)).status, "ready");
    assert.equal(first.templates.requests.length, 1);
    assert.equal(second.templates.requests.length, 1);
    const row = await api.db
      .selectFrom("template_builds")
      .select("node_id")
      .where("build_id", "=", built.buildID)
      .executeTakeFirstOrThrow();
    assert.equal(row.node_id, "node-2");

    for (let i = 0; i < 3; i++) {
      const res = await request("/v2/sandboxes", { method: "POST", json: { templateID: "placed" } });
      assert.equal(res.status, 201);
    }
    assert.equal(first.count("create"), 0, "node-1 does not have the build");
    assert.equal(second.count("create"), 3);

    for (let i = 0; i < 2; i++) {
      const child = await requestBuild(t(), { name: "child" });
      assert.equal((await startBuild(t(), child, { fromTemplate: "placed" })).status, 202);
      assert.equal((await waitForBuild(t(), child)).status, "ready");
    }
    assert.equal(first.templates.requests.length, 1, "builds on a build run where it lives");
    assert.equal(second.templates.requests.length, 3);

    const res = await request("/v2/sandboxes", { method: "POST", json: { templateID: "base" } });
    assert.equal(res.status, 201, "the base template goes anywhere");
  });
});
