/**
 * The routing catalog's signed-URL lookup (`findByAccessToken`): the client proxy asks it which
 * live sandbox's envd access token a signed `/files` URL was made with.
 */
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { APICatalog } from "../src/index.js";
import { backends, createSandbox, startTestAPI, type TestAPI } from "./helpers.js";

for (const backend of backends) {
  describe(`catalog: sandboxes by access token (${backend.name})`, () => {
    let t: TestAPI;
    before(async () => {
      t = await startTestAPI(backend);
    });
    after(() => t.close());

    const byToken = (catalog: { findByAccessToken: APICatalog["findByAccessToken"] }, token: string) =>
      catalog.findByAccessToken((candidate) => candidate === token);

    test("a live secured sandbox is found by its token, a killed one no longer", async () => {
      const a = await createSandbox(t);
      const b = await createSandbox(t);
      assert.ok(a.envdAccessToken && b.envdAccessToken && a.envdAccessToken !== b.envdAccessToken);
      assert.equal((await byToken(t.api.catalog as APICatalog, a.envdAccessToken))?.sandboxID, a.sandboxID);
      assert.equal((await byToken(t.api.catalog as APICatalog, b.envdAccessToken))?.sandboxID, b.sandboxID);
      assert.equal(await byToken(t.api.catalog as APICatalog, "not-a-token"), undefined);

      assert.equal(
        (await t.request(`/sandboxes/${a.sandboxID}/pause`, { method: "POST", json: {} })).status,
        204,
      );
      assert.equal((await byToken(t.api.catalog as APICatalog, a.envdAccessToken))?.state, "paused");
      assert.equal((await t.request(`/sandboxes/${a.sandboxID}`, { method: "DELETE" })).status, 204);
      assert.equal(await byToken(t.api.catalog as APICatalog, a.envdAccessToken), undefined);
    });

    test("another API process's sandboxes are read from the database on a miss, at most once per interval", async () => {
      const elsewhere = new APICatalog(t.api.db, { tokenRefreshMs: 60_000 });
      const first = await createSandbox(t);
      assert.equal((await byToken(elsewhere, first.envdAccessToken!))?.sandboxID, first.sandboxID);
      const second = await createSandbox(t);
      assert.equal(
        await byToken(elsewhere, second.envdAccessToken!),
        undefined,
        "read less than a minute ago",
      );
      const eager = new APICatalog(t.api.db, { tokenRefreshMs: 0 });
      assert.equal((await byToken(eager, first.envdAccessToken!))?.sandboxID, first.sandboxID);
      assert.equal((await byToken(eager, second.envdAccessToken!))?.sandboxID, second.sandboxID);
    });
  });
}
