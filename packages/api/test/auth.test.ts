import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { backends, createSandbox, METRICS_TOKEN, startTestAPI, type TestAPI } from "./helpers.js";

for (const backend of backends) {
  describe(`authentication (${backend.name})`, () => {
    let t: TestAPI;
    before(async () => {
      t = await startTestAPI(backend);
    });
    after(() => t.close());

    test("bootstrap makes the default team and key once", async () => {
      assert.match(t.apiKey, /^e2b_[0-9a-f]{40}$/);
      const again = await t.api.bootstrap();
      assert.deepEqual(again, { teamID: t.teamID }, "later starts get the team, not a key");
    });

    test("a missing or unknown key is a 401 with a message", async () => {
      const missing = await t.request("/v2/sandboxes", { key: null });
      assert.equal(missing.status, 401);
      const body = (await missing.json()) as { code: number; message: string };
      assert.equal(body.code, 401);
      assert.match(body.message, /X-API-Key/);
      for (const key of ["e2b_0000000000000000000000000000000000000000", "nonsense", " "]) {
        const res = await t.request("/v2/sandboxes", { key });
        assert.equal(res.status, 401, `key '${key}'`);
        assert.equal(((await res.json()) as { code: number }).code, 401);
      }
      const post = await t.request("/v2/sandboxes", {
        method: "POST",
        key: null,
        json: { templateID: "base" },
      });
      assert.equal(post.status, 401, "auth comes before validation and creation");
      assert.equal(t.fake.calls.filter((c) => c.method === "create").length, 0);
    });

    test("the key header's name is case-insensitive", async () => {
      for (const name of ["X-API-KEY", "x-api-key", "X-Api-Key"]) {
        const res = await t.request("/v2/sandboxes", { key: null, headers: { [name]: t.apiKey } });
        assert.equal(res.status, 200, name);
      }
    });

    test("new API keys work; they are stored only as hashes", async () => {
      const key = await t.api.createAPIKey(t.teamID, "second");
      assert.match(key, /^e2b_[0-9a-f]{40}$/);
      assert.equal((await t.request("/v2/sandboxes", { key })).status, 200);
      const stored = await t.api.db.selectFrom("api_keys").select(["key_hash", "key_mask"]).execute();
      for (const row of stored) {
        assert.match(row.key_hash, /^[0-9a-f]{64}$/);
        assert.ok(!row.key_hash.includes(key.slice(4)) && !row.key_mask.includes(key.slice(8, 36)));
      }
    });

    test("access tokens authenticate as Bearer; GET /teams answers a working key", async () => {
      const token = await t.api.createAccessToken(t.teamID);
      assert.match(token, /^sk_e2b_[0-9a-f]{40}$/);
      const bearer = { Authorization: `Bearer ${token}` };
      const res = await t.request("/teams", { key: null, headers: bearer });
      assert.equal(res.status, 200);
      const teams = (await res.json()) as Array<{
        teamID: string;
        name: string;
        apiKey: string;
        isDefault: boolean;
      }>;
      assert.equal(teams.length, 1);
      const [team] = teams;
      assert.equal(team!.teamID, t.teamID);
      assert.equal(team!.name, "default");
      assert.equal(team!.isDefault, true);
      assert.match(team!.apiKey, /^e2b_[0-9a-f]{40}$/);
      assert.notEqual(team!.apiKey, t.apiKey);
      const again = (await (
        await t.request("/teams", { key: null, headers: bearer })
      ).json()) as typeof teams;
      assert.equal(again[0]!.apiKey, team!.apiKey, "the same key on every call");

      const sbx = await createSandbox(t, {}, team!.apiKey);
      assert.equal(
        (await t.request(`/sandboxes/${sbx.sandboxID}`)).status,
        200,
        "same team as the default key",
      );
      assert.equal(
        (await t.request(`/sandboxes/${sbx.sandboxID}`, { key: null, headers: bearer })).status,
        200,
      );

      const wrongTeam = await t.request("/teams", {
        key: null,
        headers: { ...bearer, "X-Team-ID": "00000000-0000-0000-0000-000000000000" },
      });
      assert.equal(wrongTeam.status, 401);
      const badToken = await t.request("/teams", {
        key: null,
        headers: { Authorization: "Bearer sk_e2b_nope" },
      });
      assert.equal(badToken.status, 401);
    });

    test("GET /teams with an API key answers that key", async () => {
      const teams = (await (await t.request("/teams")).json()) as Array<{
        apiKey: string;
        isDefault: boolean;
      }>;
      assert.deepEqual(
        teams.map((x) => [x.apiKey, x.isDefault]),
        [[t.apiKey, true]],
      );
      const other = await t.newTeam("second team");
      const otherTeams = (await (await t.request("/teams", { key: other.apiKey })).json()) as Array<{
        teamID: string;
        isDefault: boolean;
      }>;
      assert.deepEqual(
        otherTeams.map((x) => [x.teamID, x.isDefault]),
        [[other.teamID, false]],
      );
    });

    test("health and the OpenAPI document need no key; /metrics needs the operator's token, never a team's key", async () => {
      for (const path of ["/health", "/openapi.json"]) {
        assert.equal((await t.request(path, { key: null })).status, 200, path);
      }
      const metrics = (headers: Record<string, string>) => t.request("/metrics", { key: null, headers });
      for (const headers of [
        {},
        { "x-api-key": t.apiKey },
        { authorization: `Bearer ${t.apiKey}` },
        { authorization: `Bearer ${METRICS_TOKEN}x` },
        { authorization: METRICS_TOKEN },
      ]) {
        const res = await metrics(headers);
        assert.equal(res.status, 401, JSON.stringify(headers));
        const body = (await res.json()) as { code: number; message: string };
        assert.equal(body.code, 401);
        assert.match(body.message, /Authorization: Bearer/);
        assert.doesNotMatch(body.message, /moat_api/);
      }
      const ok = await metrics({ authorization: `Bearer ${METRICS_TOKEN}` });
      assert.equal(ok.status, 200);
      assert.match(await ok.text(), /moat_api_requests_total/);
    });
  });
}
