/**
 * Requests in the middle of a pause the node began on its own (auto-pause at the end time, e.g.
 * after setTimeout(0)): connect waits for it and resumes, a new end time waits and lands on the
 * paused record, the routing catalog says pausing (the proxy holds traffic) and the proxy's
 * auto-resume waits too; a pause that fails leaves the record running. On the fake node, held
 * between its PAUSING event and the outcome.
 */
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { backends, createSandbox, eventually, startTestAPI, type TestAPI } from "./helpers.js";

for (const backend of backends) {
  describe(`requests during the node's own pause (${backend.name})`, () => {
    let t: TestAPI;
    before(async () => {
      t = await startTestAPI(backend);
    });
    after(() => t.close());

    const record = (id: string) =>
      t.api.db.selectFrom("sandboxes").selectAll().where("sandbox_id", "=", id).executeTakeFirstOrThrow();
    const shown = async (id: string) =>
      (await (await t.request(`/sandboxes/${id}`)).json()) as { state: string; endAt: string };
    const catalogState = async (id: string) => (await t.api.catalog.lookup(id))?.state;
    /** A request that must not be answered before `release`; answers its response. */
    async function pending(request: Promise<Response>, release: () => void): Promise<Response> {
      let answered = false;
      const tracked = request.then((res) => {
        answered = true;
        return res;
      });
      await new Promise((r) => setTimeout(r, 150));
      assert.equal(answered, false, "it waits for the pause to end");
      release();
      return tracked;
    }

    test("the record and the catalog say pausing at once; get shows running until it is paused", async () => {
      const sbx = await createSandbox(t, { autoPause: true });
      const pause = t.fake.beginPauseOutOfBand(sbx.sandboxID);
      await eventually(async () => (await record(sbx.sandboxID)).state === "pausing");
      assert.equal(await catalogState(sbx.sandboxID), "pausing");
      assert.equal((await shown(sbx.sandboxID)).state, "running");
      pause.finish();
      await eventually(async () => (await catalogState(sbx.sandboxID)) === "paused");
      assert.equal((await shown(sbx.sandboxID)).state, "paused");
    });

    test("connect waits for the pause to end, then resumes (one Resume)", async () => {
      const sbx = await createSandbox(t, { autoPause: true });
      const pause = t.fake.beginPauseOutOfBand(sbx.sandboxID);
      await eventually(async () => (await record(sbx.sandboxID)).state === "pausing");
      const connect = t.request(`/v2/sandboxes/${sbx.sandboxID}/connect`, {
        method: "POST",
        json: { timeout: 60 },
      });
      const res = await pending(connect, () => pause.finish());
      assert.equal(res.status, 201, await res.clone().text());
      assert.equal((await record(sbx.sandboxID)).state, "running");
      assert.equal(t.fake.sandboxes.get(sbx.sandboxID)?.state, "running");
      assert.equal(t.fake.count("resume", sbx.sandboxID), 1);
      assert.equal(await catalogState(sbx.sandboxID), "running");
    });

    test("connect before the record heard of the pause: the node refuses the new end, connect waits and resumes", async () => {
      // Its end time is near, as when the node pauses it at its end (connect's later end goes to the node).
      const sbx = await createSandbox(t, { autoPause: true, timeout: 5 });
      // No events at all: the record still says running when connect arrives.
      const pause = t.fake.beginPauseOutOfBand(sbx.sandboxID, { silently: true });
      const connect = t.request(`/v2/sandboxes/${sbx.sandboxID}/connect`, {
        method: "POST",
        json: { timeout: 60 },
      });
      const res = await pending(connect, () => pause.finish());
      assert.equal(res.status, 201, await res.clone().text());
      assert.equal(t.fake.sandboxes.get(sbx.sandboxID)?.state, "running", "not left paused behind a 201");
      assert.equal((await record(sbx.sandboxID)).state, "running");
    });

    test("a new end time waits for the pause and lands on the paused record", async () => {
      const sbx = await createSandbox(t, { autoPause: true });
      const pause = t.fake.beginPauseOutOfBand(sbx.sandboxID);
      await eventually(async () => (await record(sbx.sandboxID)).state === "pausing");
      const set = t.request(`/sandboxes/${sbx.sandboxID}/timeout`, {
        method: "POST",
        json: { timeout: 900 },
      });
      const res = await pending(set, () => pause.finish());
      assert.equal(res.status, 204, await res.clone().text());
      const row = await record(sbx.sandboxID);
      assert.equal(row.state, "paused");
      assert.ok(row.end_at.getTime() - Date.now() > 890_000);
    });

    test("the proxy's auto-resume waits for the pause, then resumes", async () => {
      const sbx = await createSandbox(t, { autoPause: true, autoResume: { enabled: true } });
      const pause = t.fake.beginPauseOutOfBand(sbx.sandboxID);
      await eventually(async () => (await record(sbx.sandboxID)).state === "pausing");
      let entry: Awaited<ReturnType<NonNullable<typeof t.api.catalog.resume>>>;
      const resumed = t.api.catalog.resume!(sbx.sandboxID).then((e) => {
        entry = e;
      });
      await new Promise((r) => setTimeout(r, 150));
      assert.equal(entry, undefined);
      pause.finish();
      await resumed;
      assert.equal(entry?.state, "running");
      assert.equal(entry?.hostAddress, t.fake.sandboxes.get(sbx.sandboxID)?.hostAddress);
    });

    test("a pause that fails: the record runs on, and a waiting connect answers running", async () => {
      const sbx = await createSandbox(t, { autoPause: true });
      const pause = t.fake.beginPauseOutOfBand(sbx.sandboxID);
      await eventually(async () => (await record(sbx.sandboxID)).state === "pausing");
      const connect = t.request(`/v2/sandboxes/${sbx.sandboxID}/connect`, {
        method: "POST",
        json: { timeout: 60 },
      });
      const res = await pending(connect, () => pause.fail());
      assert.ok(res.status === 200 || res.status === 201, `${res.status}: ${await res.clone().text()}`);
      await eventually(async () => (await record(sbx.sandboxID)).state === "running");
      assert.equal(await catalogState(sbx.sandboxID), "running");
      assert.equal(t.fake.count("resume", sbx.sandboxID), 0);
    });
  });
}
