/**
 * A node that stops a sandbox (its FAILED or KILLED event) while the API is still creating it
 * there: the create goes on to another node instead of failing the user's request.
 */
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { SandboxEventType } from "@moat/shared/gen/orchestrator";
import "../src/index.js";
import { FakeOrchestrator } from "./fakes/fake-orchestrator.js";
import { backends, startTestAPI, type TestAPI } from "./helpers.js";

for (const backend of backends) {
  describe(`creates retried after a node stopped the sandbox (${backend.name})`, () => {
    let t: TestAPI;
    const nodes = { "node-1": new FakeOrchestrator(), "node-2": new FakeOrchestrator() };
    before(async () => {
      t = await startTestAPI(backend, {
        orchestrators: Object.entries(nodes).map(([id, fake]) => ({ id, transport: fake.transport() })),
      });
    });
    after(async () => {
      await t.close();
      for (const fake of Object.values(nodes)) fake.close();
    });

    for (const type of [SandboxEventType.FAILED, SandboxEventType.KILLED]) {
      test(`${SandboxEventType[type]} mid-create: created on the other node, nothing left on the first`, async () => {
        const holds = Object.entries(nodes).map(([id, fake]) => ({
          id,
          fake,
          hold: fake.holdNext("create"),
        }));
        const creating = t.request("/v2/sandboxes", { method: "POST", json: { templateID: "base" } });
        const first = await Promise.race(
          holds.map((h) => h.hold.reached.then((sandboxID) => ({ ...h, sandboxID }))),
        );
        first.fake.announce(first.sandboxID, type, "sandbox runtime exited");
        // The event reaches the API's watcher before the node answers the create.
        await new Promise((r) => setTimeout(r, 200));
        for (const h of holds) h.hold.release();
        const res = await creating;
        assert.equal(res.status, 201, await res.clone().text());
        const body = (await res.json()) as { sandboxID: string };
        assert.equal(body.sandboxID, first.sandboxID);
        const other = holds.find((h) => h.id !== first.id)!;
        assert.ok(other.fake.sandboxes.has(body.sandboxID), "created on the other node");
        assert.ok(!first.fake.sandboxes.has(body.sandboxID), "deleted from the node that stopped it");
        const row = await t.api.db
          .selectFrom("sandboxes")
          .selectAll()
          .where("sandbox_id", "=", body.sandboxID)
          .executeTakeFirstOrThrow();
        assert.equal(row.state, "running");
        assert.equal(row.node_id, other.id);
        assert.equal((await t.request(`/sandboxes/${body.sandboxID}`, { method: "DELETE" })).status, 204);
      });
    }
  });
}
