/**
 * Egress rules through the API (E2B's network.allowOut/denyOut, allow_internet_access, and
 * PUT /sandboxes/{id}/network): what is checked, what reaches the node, what GET shows.
 */
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { backends, createSandbox, startTestAPI, type TestAPI } from "./helpers.js";

async function expectError(res: Response, status: number, message?: RegExp): Promise<string> {
  const body = (await res.json()) as { code: number; message: string };
  assert.equal(res.status, status, `status: ${JSON.stringify(body)}`);
  assert.equal(body.code, status, "body.code equals the status");
  assert.deepEqual(Object.keys(body).sort(), ["code", "message", "requestId"]);
  if (message) assert.match(body.message, message);
  return body.message;
}

for (const backend of backends) {
  describe(`sandbox egress rules (${backend.name})`, () => {
    let t: TestAPI;
    before(async () => {
      t = await startTestAPI(backend);
    });
    after(() => t.close());

    const create = (json: unknown) => t.request("/v2/sandboxes", { method: "POST", json });
    const update = (sandboxID: string, json: unknown, key?: string) =>
      t.request(`/sandboxes/${sandboxID}/network`, { method: "PUT", json, key });
    const detail = async (sandboxID: string) =>
      (await (await t.request(`/sandboxes/${sandboxID}`)).json()) as {
        allowInternetAccess?: boolean | null;
        network?: Record<string, unknown>;
      };

    test("a create's rules reach its node and show in its detail, as given", async () => {
      const network = {
        allowOut: ["1.1.1.1", "api.example.com", "*.cdn.example.com"],
        denyOut: ["0.0.0.0/0"],
      };
      const sbx = await createSandbox(t, { network: { ...network, allowPublicTraffic: true } });
      const config = t.fake.sandboxes.get(sbx.sandboxID)!.config;
      assert.deepEqual(config.allowOut, network.allowOut);
      assert.deepEqual(config.denyOut, network.denyOut);
      assert.equal(config.allowInternetAccess, true);
      const got = await detail(sbx.sandboxID);
      assert.deepEqual(got.network, { allowPublicTraffic: true, ...network });
      assert.equal(got.allowInternetAccess, null, "not set by the create");

      const off = await createSandbox(t, {
        allow_internet_access: false,
        network: { allowOut: ["8.8.8.8"] },
      });
      assert.equal(t.fake.sandboxes.get(off.sandboxID)!.config.allowInternetAccess, false);
      assert.deepEqual(t.fake.sandboxes.get(off.sandboxID)!.config.allowOut, ["8.8.8.8"]);
      assert.equal((await detail(off.sandboxID)).allowInternetAccess, false);
    });

    test("malformed rules are a 400 naming the entry; nothing reaches the node", async () => {
      const creates = t.fake.count("create");
      for (const [network, message] of [
        [{ allowOut: ["10.0.0.0/33"] }, /network.allowOut: '10.0.0.0\/33' is not a valid/],
        [{ denyOut: ["example.com"] }, /network.denyOut: 'example.com' is a domain name/],
        [{ allowOut: ["example.com"] }, /denyOut must include '0.0.0.0\/0'/],
        [{ allowOut: ["2001:db8::1"] }, /IPv6/],
        [{ allowOut: ["a.*.example.com"], denyOut: ["0.0.0.0/0"] }, /not a valid domain name/],
        [{ allowOut: ["1.2.3.4:443"] }, /names a port/],
        [{ denyOut: Array.from({ length: 257 }, (_, i) => `10.1.${i >> 8}.${i & 255}`) }, /at most 256/],
      ] as const) {
        await expectError(await create({ templateID: "base", network }), 400, message);
      }
      await expectError(
        await create({ templateID: "base", network: { allowOut: "8.8.8.8" } }),
        400,
        /allowOut/,
      );
      assert.equal(t.fake.count("create"), creates);
    });

    test("what this version lacks is a 501, never ignored", async () => {
      await expectError(
        await create({ templateID: "base", network: { rules: { "api.example.com": [{}] } } }),
        501,
        /network.rules/,
      );
      const sbx = await createSandbox(t);
      await expectError(
        await update(sbx.sandboxID, { egressProxy: { address: "p:1080" } }),
        501,
        /egressProxy/,
      );
    });

    test("an update replaces the whole rules: at the node, in the detail; left-out fields are cleared", async () => {
      const sbx = await createSandbox(t, {
        allow_internet_access: true,
        network: { allowOut: ["1.1.1.1"], denyOut: ["0.0.0.0/0"], allowPublicTraffic: false },
      });
      const res = await update(sbx.sandboxID, { denyOut: ["8.8.8.0/24"] });
      assert.equal(res.status, 204, await res.text());
      const config = t.fake.sandboxes.get(sbx.sandboxID)!.config;
      assert.deepEqual(config.allowOut, []);
      assert.deepEqual(config.denyOut, ["8.8.8.0/24"]);
      assert.equal(config.allowInternetAccess, true);
      let got = await detail(sbx.sandboxID);
      assert.deepEqual(
        got.network,
        { allowPublicTraffic: false, denyOut: ["8.8.8.0/24"] },
        "not an egress rule: kept",
      );
      assert.equal(got.allowInternetAccess, null);

      assert.equal((await update(sbx.sandboxID, { allow_internet_access: false })).status, 204);
      assert.equal(config.allowInternetAccess, false);
      got = await detail(sbx.sandboxID);
      assert.equal(got.allowInternetAccess, false);
      assert.deepEqual(got.network, { allowPublicTraffic: false });

      assert.equal((await update(sbx.sandboxID, {})).status, 204);
      assert.equal(config.allowInternetAccess, true);
      assert.deepEqual([...config.allowOut, ...config.denyOut], []);
    });

    test("a paused sandbox's rules are updated for its resume", async () => {
      const sbx = await createSandbox(t);
      assert.equal((await t.request(`/sandboxes/${sbx.sandboxID}/pause`, { method: "POST" })).status, 204);
      const res = await update(sbx.sandboxID, { allowOut: ["api.example.com"], denyOut: ["0.0.0.0/0"] });
      assert.equal(res.status, 204, await res.text());
      assert.deepEqual(t.fake.sandboxes.get(sbx.sandboxID)!.config.allowOut, ["api.example.com"]);
      assert.deepEqual((await detail(sbx.sandboxID)).network, {
        allowOut: ["api.example.com"],
        denyOut: ["0.0.0.0/0"],
      });
    });

    test("unknown, another team's, killed: 404 with body.code 404; bad rules 400; between states 409", async () => {
      await expectError(await update("inosuchsandbox", {}), 404);
      const sbx = await createSandbox(t);
      const other = await t.newTeam("network-other");
      await expectError(await update(sbx.sandboxID, {}, other.apiKey), 404);
      await expectError(await update(sbx.sandboxID, { allowOut: ["example.com"] }), 400, /ALL_TRAFFIC/);
      await expectError(await update(sbx.sandboxID, { bogus: 1 }), 400, /unknown field 'bogus'/);
      t.fake.failNext("updateNetwork", 9 /* FailedPrecondition */, "sandbox is pausing");
      await expectError(await update(sbx.sandboxID, {}), 409);
      assert.equal((await t.request(`/sandboxes/${sbx.sandboxID}`, { method: "DELETE" })).status, 204);
      await expectError(await update(sbx.sandboxID, {}), 404);
    });
  });
}
