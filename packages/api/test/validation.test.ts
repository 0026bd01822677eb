import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { backends, createSandbox, startTestAPI, type TestAPI } from "./helpers.js";

async function expectError(res: Response, status: number, message?: RegExp): Promise<string> {
  const body = (await res.json()) as { code: number; message: string };
  assert.equal(res.status, status, `status: ${JSON.stringify(body)}`);
  assert.equal(body.code, status, "body.code equals the status");
  assert.equal(typeof body.message, "string");
  assert.deepEqual(Object.keys(body).sort(), ["code", "message", "requestId"]);
  if (message) assert.match(body.message, message);
  return body.message;
}

for (const backend of backends) {
  describe(`request validation and error shapes (${backend.name})`, () => {
    let t: TestAPI;
    before(async () => {
      t = await startTestAPI(backend);
    });
    after(() => t.close());

    const create = (json: unknown, path = "/v2/sandboxes") => t.request(path, { method: "POST", json });

    test("unknown fields are refused, named in the message", async () => {
      await expectError(await create({ templateID: "base", bogus: 1 }), 400, /unknown field 'bogus'/);
      await expectError(
        await create({ templateID: "base", network: { allowPublicTraffic: true, nope: 1 } }),
        400,
        /network: unknown field 'nope'/,
      );
      await expectError(await create({ templateID: "base", secure: true }), 400, /unknown field 'secure'/);
      assert.equal(t.fake.calls.filter((c) => c.method === "create").length, 0, "nothing reached the node");
    });

    test("wrong types and ranges are refused with the field's path", async () => {
      await expectError(
        await create({ templateID: "base", timeout: "30" }),
        400,
        /^invalid request body: timeout:/,
      );
      await expectError(await create({ templateID: "base", timeout: 1.5 }), 400, /timeout/);
      await expectError(await create({ templateID: "base", timeout: 0 }), 400, /timeout/);
      await expectError(await create({ templateID: 42 }), 400, /templateID/);
      await expectError(await create({}), 400, /templateID/);
      await expectError(await create({ templateID: "base", metadata: { a: 1 } }), 400, /metadata\.a/);
      await expectError(await create({ templateID: "base", envVars: ["A=1"] }), 400, /envVars/);
      await expectError(await create({ templateID: "base", envVars: { "A=B": "1" } }), 400, /A=B/);
      await expectError(await create([]), 400);
      await expectError(await create("templateID"), 400);
      await expectError(await create({ templateID: "base", timeout: 86_401 }), 400, /at most 86400 seconds/);
    });

    test("rules between fields", async () => {
      await expectError(
        await create({ templateID: "base", autoPauseMemory: false }),
        400,
        /autoPauseMemory: false requires autoPause: true/,
      );
      await expectError(
        await create({
          templateID: "base",
          autoPause: true,
          autoPauseMemory: false,
          autoResume: { enabled: true },
        }),
        400,
        /cannot be combined with autoResume/,
      );
      await expectError(
        await create({ templateID: "base", autoPause: false, autoPauseMemory: false }, "/sandboxes"),
        400,
        /autoPauseMemory: false requires autoPause: true/,
      );
      const filesOnly = await create({ templateID: "base", autoPause: true, autoPauseMemory: false });
      assert.equal(filesOnly.status, 201, "a filesystem-only auto-pause alone is fine");
      await expectError(
        await create({ templateID: "base", network: { allowPublicTraffic: false } }, "/sandboxes"),
        400,
        /requires a secured sandbox/,
      );
      const secured = await create(
        { templateID: "base", secure: true, network: { allowPublicTraffic: false } },
        "/sandboxes",
      );
      assert.equal(secured.status, 201);
    });

    test("mcp is refused as a gateway that cannot start (400, the SDK's SandboxError), before any sandbox", async () => {
      await expectError(
        await create({ templateID: "base", mcp: { x: {} } }),
        400,
        /^Failed to start MCP gateway: .*without mcp/,
      );
      await expectError(
        await create({ templateID: "mcp-gateway", mcp: {} }, "/sandboxes"),
        400,
        /MCP gateway/,
      );
    });

    test("features this version lacks answer 501, never a silent success", async () => {
      await expectError(
        await create({ templateID: "base", network: { egressProxy: { address: "p:1080" } } }),
        501,
        /egressProxy/,
      );
      const nullables = await create({ templateID: "base", mcp: null, network: { egressProxy: null } });
      assert.equal(nullables.status, 201);
    });

    test("malformed JSON is a 400, another media type a 415", async () => {
      const res = await t.request("/v2/sandboxes", {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: "{not json",
      });
      await expectError(res, 400, /JSON/i);
      const text = await t.request("/v2/sandboxes", {
        method: "POST",
        headers: { "Content-Type": "text/plain" },
        body: "templateID=base",
      });
      await expectError(text, 415);
    });

    test("bodies over the limit are a 413, declared or chunked", async () => {
      const big = { templateID: "base", metadata: { blob: "x".repeat(1024 * 1024 + 10) } };
      await expectError(await create(big), 413, /larger than 1048576 bytes/);
      const chunked = (text: string) =>
        t.request("/v2/sandboxes", {
          method: "POST",
          headers: { "Content-Type": "application/json" },
          body: new ReadableStream({
            start(controller) {
              for (let i = 0; i < text.length; i += 64 * 1024) {
                controller.enqueue(new TextEncoder().encode(text.slice(i, i + 64 * 1024)));
              }
              controller.close();
            },
          }),
          duplex: "half",
        } as RequestInit);
      await expectError(await chunked(JSON.stringify(big)), 413, /larger than 1048576 bytes/);
      assert.equal(
        (await chunked(JSON.stringify({ templateID: "base" }))).status,
        201,
        "a small chunked body passes",
      );
    });

    test("unknown routes and methods are a JSON 404", async () => {
      await expectError(await t.request("/nope"), 404, /no route for GET \/nope/);
      await expectError(await t.request("/health", { method: "DELETE" }), 404);
      await expectError(await t.request("/sandboxes/x/y/z"), 404);
    });

    test("list queries are checked", async () => {
      await expectError(await t.request("/v2/sandboxes?limit=0"), 400, /limit/);
      await expectError(await t.request("/v2/sandboxes?limit=101"), 400, /limit/);
      await expectError(await t.request("/v2/sandboxes?limit=ten"), 400, /limit/);
      await expectError(await t.request("/v2/sandboxes?state=running,sleeping"), 400, /'sleeping'/);
      await expectError(await t.request("/v2/sandboxes?order=up"), 400, /order/);
      await expectError(await t.request("/v2/sandboxes?startedAfter=yesterday"), 400, /startedAfter/);
      await expectError(await t.request("/v2/sandboxes?nextToken=garbage"), 400, /nextToken/);
      await expectError(
        await t.request(`/v2/sandboxes?metadata=${encodeURIComponent("a=%zz")}`),
        400,
        /metadata/,
      );
    });

    test("timeout bodies are checked", async () => {
      const sbx = await createSandbox(t);
      const post = (json: unknown) =>
        t.request(`/sandboxes/${sbx.sandboxID}/timeout`, { method: "POST", json });
      await expectError(await post({}), 400, /timeout/);
      await expectError(await post({ timeout: -1 }), 400, /timeout/);
      await expectError(await post({ timeout: 10, extra: true }), 400, /unknown field 'extra'/);
    });
  });
}
