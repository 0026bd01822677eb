import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { hashSecret } from "../src/auth/secrets.js";
import { backends, startTestAPI, type TestAPI } from "./helpers.js";

interface KeyView {
  id: string;
  name: string;
  mask: { prefix: string; valueLength: number; maskedValuePrefix: string; maskedValueSuffix: string };
  createdAt: string;
  createdBy: { id: string } | null;
  lastUsed: string | null;
}

for (const backend of backends) {
  describe(`API keys and access tokens (${backend.name})`, () => {
    let t: TestAPI;
    before(async () => {
      t = await startTestAPI(backend);
    });
    after(() => t.close());

    const list = async (key?: string) => {
      const res = await t.request("/api-keys", { key });
      assert.equal(res.status, 200);
      return (await res.json()) as KeyView[];
    };
    const create = async (name: string, key?: string) => {
      const res = await t.request("/api-keys", { method: "POST", json: { name }, key });
      assert.equal(res.status, 201, await res.clone().text());
      return (await res.json()) as KeyView & { key: string };
    };

    test("a created key is answered once, works, and is listed masked with E2B's shape", async () => {
      const created = await create("ci");
      assert.match(created.key, /^e2b_[0-9a-f]{40}$/);
      assert.deepEqual(created.mask, {
        prefix: "e2b_",
        valueLength: 40,
        maskedValuePrefix: created.key.slice(4, 6),
        maskedValueSuffix: created.key.slice(-4),
      });
      assert.ok(created.createdBy, "the creating key is recorded");
      assert.equal((await t.request("/v2/sandboxes", { key: created.key })).status, 200);
      const listed = await list();
      const entry = listed.find((k) => k.id === created.id);
      assert.ok(entry);
      assert.equal(entry.name, "ci");
      assert.equal("key" in entry, false);
      // No listing holds the secret, or anything but its mask.
      const body = JSON.stringify(listed);
      assert.equal(body.includes(created.key), false);
      assert.equal(body.includes(created.key.slice(4, 12)), false);
      assert.equal(body.includes(hashSecret(created.key)), false);
      assert.ok(entry.lastUsed, "lastUsed is set by the request made with it");
    });

    test("a revoked key fails its next request; a second revoke is a 404", async () => {
      const created = await create("short-lived");
      assert.equal((await t.request("/v2/sandboxes", { key: created.key })).status, 200);
      const del = await t.request(`/api-keys/${created.id}`, { method: "DELETE" });
      assert.equal(del.status, 204);
      assert.equal((await t.request("/v2/sandboxes", { key: created.key })).status, 401);
      assert.equal((await t.request(`/api-keys/${created.id}`, { method: "DELETE" })).status, 404);
    });

    test("another team's key ids read as missing: no list, rename or revoke across teams", async () => {
      const other = await t.newTeam("other-keys");
      const theirs = await create("theirs", other.apiKey);
      assert.equal(
        (await list()).some((k) => k.id === theirs.id),
        false,
      );
      const rename = await t.request(`/api-keys/${theirs.id}`, {
        method: "PATCH",
        json: { name: "mine now" },
      });
      assert.equal(rename.status, 404);
      const del = await t.request(`/api-keys/${theirs.id}`, { method: "DELETE" });
      assert.equal(del.status, 404);
      assert.equal((await t.request("/v2/sandboxes", { key: theirs.key })).status, 200);
      assert.equal((await list(other.apiKey)).find((k) => k.id === theirs.id)?.name, "theirs");
    });

    test("renaming answers the key; bad bodies are 400", async () => {
      const created = await create("old name");
      const res = await t.request(`/api-keys/${created.id}`, { method: "PATCH", json: { name: "new name" } });
      assert.equal(res.status, 200);
      assert.equal(((await res.json()) as KeyView).name, "new name");
      for (const json of [{}, { name: "" }, { name: "x".repeat(257) }, { name: "a", extra: 1 }]) {
        const bad = await t.request("/api-keys", { method: "POST", json });
        assert.equal(bad.status, 400, JSON.stringify(json));
        const body = (await bad.json()) as { code: number; message: string };
        assert.equal(body.code, 400);
      }
    });

    test("the team's last key of its own cannot be revoked (409), the one before it can", async () => {
      const team = await t.newTeam("last-key");
      const [only] = await list(team.apiKey);
      assert.ok(only);
      const refused = await t.request(`/api-keys/${only.id}`, { method: "DELETE", key: team.apiKey });
      assert.equal(refused.status, 409);
      assert.match(((await refused.json()) as { message: string }).message, /last key: create another/);
      const second = await create("second", team.apiKey);
      assert.equal(
        (await t.request(`/api-keys/${only.id}`, { method: "DELETE", key: team.apiKey })).status,
        204,
      );
      assert.equal(
        (await t.request(`/api-keys/${second.id}`, { method: "DELETE", key: second.key })).status,
        409,
      );
      assert.equal((await t.request("/v2/sandboxes", { key: second.key })).status, 200);
    });

    test("two concurrent revocations of a team's last two keys leave one", async () => {
      const team = await t.newTeam("race");
      const second = await create("second", team.apiKey);
      const keys = await list(team.apiKey);
      assert.equal(keys.length, 2);
      const statuses = await Promise.all(
        keys.map((k) =>
          t.request(`/api-keys/${k.id}`, { method: "DELETE", key: second.key }).then((r) => r.status),
        ),
      );
      assert.deepEqual(statuses.sort(), [204, 409]);
      const left = (
        await t.api.db
          .selectFrom("api_keys")
          .select("api_key_id")
          .where("team_id", "=", team.teamID)
          .execute()
      ).length;
      assert.equal(left, 1);
    });

    test("access tokens: made and revoked with an access token only, never with an API key", async () => {
      const token = await t.api.createAccessToken(t.teamID, "operator");
      const bearer = { Authorization: `Bearer ${token}` };
      const byKey = await t.request("/access-tokens", { method: "POST", json: { name: "from a key" } });
      assert.equal(byKey.status, 403);
      const res = await t.request("/access-tokens", {
        method: "POST",
        json: { name: "laptop" },
        key: null,
        headers: bearer,
      });
      assert.equal(res.status, 201);
      const created = (await res.json()) as {
        id: string;
        token: string;
        name: string;
        mask: KeyView["mask"];
      };
      assert.match(created.token, /^sk_e2b_[0-9a-f]{40}$/);
      assert.equal(created.mask.prefix, "sk_e2b_");
      const newBearer = { Authorization: `Bearer ${created.token}` };
      // The token's derived key (GET /teams) goes with it.
      const teams = await t.request("/teams", { key: null, headers: newBearer });
      const [{ apiKey: derived }] = (await teams.json()) as Array<{ apiKey: string }>;
      assert.equal((await t.request("/v2/sandboxes", { key: derived! })).status, 200);
      assert.equal(
        (await t.request(`/access-tokens/${created.id}`, { method: "DELETE" })).status,
        403,
        "an API key cannot revoke a token",
      );
      const other = await t.newTeam("other-tokens");
      assert.equal(
        (await t.request(`/access-tokens/${created.id}`, { method: "DELETE", key: null, headers: bearer }))
          .status,
        204,
      );
      assert.equal((await t.request("/v2/sandboxes", { key: null, headers: newBearer })).status, 401);
      assert.equal((await t.request("/v2/sandboxes", { key: derived! })).status, 401);
      const otherToken = await t.api.createAccessToken(other.teamID, "theirs");
      const otherID = (
        await t.api.db
          .selectFrom("access_tokens")
          .select("access_token_id")
          .where("team_id", "=", other.teamID)
          .executeTakeFirstOrThrow()
      ).access_token_id;
      assert.equal(
        (await t.request(`/access-tokens/${otherID}`, { method: "DELETE", key: null, headers: bearer }))
          .status,
        404,
      );
      assert.equal(
        (await t.request("/v2/sandboxes", { key: null, headers: { Authorization: `Bearer ${otherToken}` } }))
          .status,
        200,
      );
    });
  });
}
