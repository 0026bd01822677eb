import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { backends, createSandbox, METRICS_TOKEN, startTestAPI, type TestAPI } from "./helpers.js";

const ADMIN_TOKEN = "admin-token-for-tests-0123456789";

for (const backend of backends) {
  describe(`service routes and the routing catalog (${backend.name})`, () => {
    let t: TestAPI;
    before(async () => {
      t = await startTestAPI(backend, { adminToken: ADMIN_TOKEN });
    });
    after(() => t.close());

    test("the OpenAPI document comes from the same schemas that validate", async () => {
      const res = await t.request("/openapi.json", { key: null });
      assert.equal(res.status, 200);
      const doc = (await res.json()) as {
        openapi: string;
        paths: Record<string, Record<string, unknown>>;
        components: { schemas: Record<string, { additionalProperties?: boolean; required?: string[] }> };
      };
      assert.match(doc.openapi, /^3\./);
      for (const [path, method] of [
        ["/v2/sandboxes", "post"],
        ["/v2/sandboxes", "get"],
        ["/sandboxes", "post"],
        ["/sandboxes", "get"],
        ["/sandboxes/{sandboxID}", "get"],
        ["/sandboxes/{sandboxID}", "delete"],
        ["/sandboxes/{sandboxID}/timeout", "post"],
        ["/sandboxes/{sandboxID}/refreshes", "post"],
        ["/sandboxes/{sandboxID}/connect", "post"],
        ["/v2/sandboxes/{sandboxID}/connect", "post"],
        ["/sandboxes/{sandboxID}/logs", "get"],
        ["/sandboxes/{sandboxID}/metrics", "get"],
        ["/sandboxes/metrics", "get"],
        ["/sandboxes/{sandboxID}/pause", "post"],
        ["/sandboxes/{sandboxID}/resume", "post"],
        ["/teams", "get"],
        ["/health", "get"],
      ] as const) {
        assert.ok(doc.paths[path]?.[method], `${method.toUpperCase()} ${path} documented`);
      }
      assert.equal(doc.paths["/internal/catalog/{sandboxID}"], undefined, "internal routes stay out");
      const v2 = doc.components.schemas.NewSandboxV2!;
      assert.equal(v2.additionalProperties, false, "strict bodies are documented as such");
      assert.deepEqual(v2.required, ["templateID"]);
      for (const name of ["Sandbox", "SandboxDetail", "ListedSandbox", "Error", "Team", "SandboxLogs"]) {
        assert.ok(doc.components.schemas[name], `schema ${name}`);
      }
    });

    test("GET /health", async () => {
      const res = await t.request("/health", { key: null });
      assert.equal(res.status, 200);
    });

    test("GET /metrics counts requests by route pattern and status, and sandboxes by state", async () => {
      const sbx = await createSandbox(t);
      await t.request(`/sandboxes/${sbx.sandboxID}`);
      await t.request("/sandboxes/nosuch");
      const text = await (
        await t.request("/metrics", { key: null, headers: { authorization: `Bearer ${METRICS_TOKEN}` } })
      ).text();
      assert.match(
        text,
        /moat_api_requests_total\{method="GET",route="\/sandboxes\/:sandboxID",status="200"\} 1/,
      );
      assert.match(
        text,
        /moat_api_requests_total\{method="GET",route="\/sandboxes\/:sandboxID",status="404"\} 1/,
      );
      assert.match(text, /moat_api_requests_total\{method="POST",route="\/v2\/sandboxes",status="201"\} 1/);
      assert.match(
        text,
        /moat_api_request_duration_seconds_bucket\{le="0.05",method="POST",route="\/v2\/sandboxes"/,
      );
      assert.match(text, /moat_api_sandboxes\{state="running"\} 1/);
      assert.doesNotMatch(text, /nosuch/, "ids never become labels");
    });

    test("catalog: running entries with node address and tokens; killed ones vanish", async () => {
      const sbx = await createSandbox(t, { network: { allowPublicTraffic: false } });
      const entry = await t.api.catalog.lookup(sbx.sandboxID);
      assert.deepEqual(entry, {
        sandboxID: sbx.sandboxID,
        state: "running",
        hostAddress: t.fake.sandboxes.get(sbx.sandboxID)!.hostAddress,
        envdAccessToken: sbx.envdAccessToken,
        trafficAccessToken: sbx.trafficAccessToken,
        autoResume: false,
      });
      assert.equal(await t.api.catalog.lookup("unknownsandbox"), undefined);
      await t.request(`/sandboxes/${sbx.sandboxID}`, { method: "DELETE" });
      assert.equal(await t.api.catalog.lookup(sbx.sandboxID), undefined);
    });

    test("the internal catalog route needs the admin token", async () => {
      const sbx = await createSandbox(t);
      const path = `/internal/catalog/${sbx.sandboxID}`;
      const ok = await t.request(path, { key: null, headers: { "X-Admin-Token": ADMIN_TOKEN } });
      assert.equal(ok.status, 200);
      assert.deepEqual(await ok.json(), await t.api.catalog.lookup(sbx.sandboxID));
      const wrong = await t.request(path, { key: null, headers: { "X-Admin-Token": "wrong" } });
      assert.equal(wrong.status, 401);
      assert.equal((await t.request(path, { key: null })).status, 401);
      assert.equal(
        (await t.request(path, { headers: { "X-Admin-Token": "" } })).status,
        401,
        "an API key is not enough",
      );
      const missing = await t.request("/internal/catalog/nosuch", {
        key: null,
        headers: { "X-Admin-Token": ADMIN_TOKEN },
      });
      assert.equal(missing.status, 404);
    });
  });
}

describe("internal routes without an admin token", () => {
  test("are absent", async () => {
    const t = await startTestAPI(backends[0]!);
    try {
      assert.equal((await t.request("/internal/catalog/x", { key: null })).status, 404);
    } finally {
      await t.close();
    }
  });
});
