/**
 * Superseded builds are retired: once a newer build of the template is ready (for the grace
 * period) and no tag names them, the node is told to drop them and the record says so; tagged
 * builds, builds a running build stacks on, and builds the node could not drop yet are kept.
 */
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { Code, ConnectError } from "@connectrpc/connect";
import { createNoopLogger } from "@moat/shared";
import { NodeClient } from "../src/orchestrator/node-client.js";
import { RETIRE_AFTER_MS, type RetireDeps, retireSupersededBuilds } from "../src/template/retire.js";
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
  describe(`retiring superseded template builds (${backend.name})`, () => {
    let t: TemplateTestAPI;
    let deps: RetireDeps;
    /** A sweep past the grace period: everything superseded by now counts. */
    const retireNow = () => retireSupersededBuilds(deps, new Date(Date.now() + 1000));
    const retiredAt = async (buildID: string) =>
      (
        await t.api.db
          .selectFrom("template_builds")
          .select("retired_at")
          .where("build_id", "=", buildID)
          .executeTakeFirstOrThrow()
      ).retired_at;

    before(async () => {
      t = await startTemplateTestAPI(backend);
      const node = new NodeClient({ id: "node-1", transport: t.fake.transport() });
      deps = { db: t.api.db, nodes: new Map([["node-1", node]]), logger: createNoopLogger() };
    });
    after(() => t.close());

    test("a rebuild retires the previous build once the grace period has passed", async () => {
      const first = await buildTemplate(t, "app");
      const second = await buildTemplate(t, "app");
      assert.deepEqual(
        await retireSupersededBuilds(deps, new Date(Date.now() - RETIRE_AFTER_MS)),
        [],
        "not while a create may still be on its way to the previous build",
      );
      assert.deepEqual(await retireNow(), [first.buildID]);
      assert.ok(t.fake.templates.deleted.includes(first.buildID), "the node was told");
      assert.ok(!t.fake.templates.deleted.includes(second.buildID));
      assert.ok(await retiredAt(first.buildID));
      assert.equal(await retiredAt(second.buildID), null);
      assert.deepEqual(await retireNow(), [], "once");

      // The history stays; creates take the build that is kept.
      const status = await t.request(`/templates/${first.templateID}/builds/${first.buildID}/status`);
      assert.equal(status.status, 200);
      const created = await createSandbox(t, { templateID: "app" });
      assert.equal(t.fake.sandboxes.get(created.sandboxID)?.config.buildId, second.buildID);
    });

    test("a build a tag names is kept until the tag moves on", async () => {
      const v1 = await buildTemplate(t, "svc:v1");
      const latest = await buildTemplate(t, "svc");
      assert.deepEqual(await retireNow(), [], "v1 is still named by its tag; the latest is default");
      const v1Again = await buildTemplate(t, "svc:v1");
      assert.deepEqual(new Set(await retireNow()), new Set([v1.buildID, latest.buildID]));
      assert.equal(await retiredAt(v1Again.buildID), null);
      const alias = await t.request("/templates/aliases/svc:v1");
      assert.equal(alias.status, 200, "the tag still resolves");
    });

    test("a build that a running build stacks on is kept until that build ends", async () => {
      const parent = await buildTemplate(t, "parent");
      const hold = t.fake.templates.holdNext();
      const child = await requestBuild(t, { name: "child" });
      assert.equal((await startBuild(t, child, { fromTemplate: "parent" })).status, 202);
      await hold.reached;
      await buildTemplate(t, "parent");
      assert.deepEqual(await retireNow(), []);
      hold.release();
      assert.equal((await waitForBuild(t, child)).status, "ready");
      assert.deepEqual(await retireNow(), [parent.buildID]);
    });

    test("a node that cannot drop a build now is asked again at the next sweep", async () => {
      const old = await buildTemplate(t, "sticky");
      await buildTemplate(t, "sticky");
      t.fake.templates.deleteFailure = new ConnectError("disk busy", Code.Unavailable);
      try {
        assert.deepEqual(await retireNow(), []);
        assert.equal(await retiredAt(old.buildID), null, "not marked while the node keeps it");
      } finally {
        t.fake.templates.deleteFailure = undefined;
      }
      assert.deepEqual(await retireNow(), [old.buildID]);
    });

    test("two API processes sweeping at once retire each build once", async () => {
      const old = await buildTemplate(t, "raced");
      await buildTemplate(t, "raced");
      const [a, b] = await Promise.all([retireNow(), retireNow()]);
      assert.deepEqual([...a, ...b], [old.buildID]);
    });
  });
}
