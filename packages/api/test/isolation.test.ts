import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { backends, createSandbox, POSTGRES_OFF, startTestAPI, type TestAPI } from "./helpers.js";

for (const backend of backends) {
  describe(`team isolation (${backend.name})`, () => {
    let t: TestAPI;
    let other: { teamID: string; apiKey: string };
    let sandboxID: string;
    before(async () => {
      t = await startTestAPI(backend);
      other = await t.newTeam("intruder");
      ({ sandboxID } = await createSandbox(t, { metadata: { owner: "a" } }));
    });
    after(() => t.close());

    test("another team gets exactly the 404 of a missing sandbox, everywhere", async () => {
      const attempts: Array<[string, string, unknown?]> = [
        ["GET", ""],
        ["DELETE", ""],
        ["POST", "/timeout", { timeout: 10 }],
        ["POST", "/refreshes", { duration: 60 }],
        ["POST", "/connect", { timeout: 60 }],
        ["POST", "/pause", {}],
        ["POST", "/resume", {}],
        ["GET", "/logs"],
        ["GET", "/metrics"],
      ];
      for (const [method, suffix, json] of attempts) {
        const theirs = await t.request(`/sandboxes/${sandboxID}${suffix}`, {
          method,
          json,
          key: other.apiKey,
        });
        const missing = await t.request(`/sandboxes/zzzzzzzzzzzzzzzzzzzz${suffix}`, {
          method,
          json,
          key: other.apiKey,
        });
        const theirsBody = (await theirs.json()) as { code: number; message: string };
        const missingBody = (await missing.json()) as { code: number; message: string };
        assert.equal(theirs.status, 404, `${method} ${suffix}`);
        assert.equal(theirsBody.code, 404);
        assert.equal(missing.status, 404);
        assert.equal(
          theirsBody.message.replace(sandboxID, "ID"),
          missingBody.message.replace("zzzzzzzzzzzzzzzzzzzz", "ID"),
          `${method} ${suffix}: same message as for a missing sandbox`,
        );
      }
      const v2connect = await t.request(`/v2/sandboxes/${sandboxID}/connect`, {
        method: "POST",
        json: {},
        key: other.apiKey,
      });
      assert.equal(v2connect.status, 404);
      const many = await t.request(`/sandboxes/metrics?sandbox_ids=${sandboxID}`, { key: other.apiKey });
      assert.deepEqual(await many.json(), { sandboxes: {} });

      // Nothing the other team did touched the sandbox.
      assert.ok(t.fake.sandboxes.has(sandboxID));
      const endCalls = t.fake.calls.filter(
        (c) => c.method !== "create" && c.method !== "list" && c.method !== "get",
      );
      assert.deepEqual(endCalls, []);
      assert.equal((await t.request(`/sandboxes/${sandboxID}`)).status, 200);
    });

    test("another team's lists do not show it", async () => {
      const v2 = await t.request("/v2/sandboxes", { key: other.apiKey });
      assert.deepEqual(await v2.json(), []);
      assert.equal(v2.headers.get("X-Total-Running"), "0");
      const filtered = await t.request(`/v2/sandboxes?metadata=${encodeURIComponent("owner=a")}`, {
        key: other.apiKey,
      });
      assert.deepEqual(await filtered.json(), []);
      const v1 = await t.request("/sandboxes", { key: other.apiKey });
      assert.deepEqual(await v1.json(), []);
      const mine = (await (await t.request("/v2/sandboxes")).json()) as Array<{ sandboxID: string }>;
      assert.deepEqual(
        mine.map((s) => s.sandboxID),
        [sandboxID],
      );
    });
  });
}

const postgres = backends.find((b) => b.name === "postgres");

describe("two deployments in schemas of one PostgreSQL database", {
  skip: postgres ? false : POSTGRES_OFF,
}, () => {
  test("the second migrates its own schema while the first's tables exist", async () => {
    const first = await startTestAPI(postgres!);
    try {
      const second = await startTestAPI(postgres!);
      try {
        assert.equal((await second.request("/v2/sandboxes")).status, 200);
        assert.equal((await first.request("/v2/sandboxes", { key: second.apiKey })).status, 401);
      } finally {
        await second.close();
      }
    } finally {
      await first.close();
    }
  });
});
