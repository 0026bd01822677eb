/**
 * Counterexamples the API fuzzer (fuzz.test.ts) found, shrunk, kept as plain requests so that
 * each bug stays fixed whatever seed the fuzzer runs with.
 */
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { createNoopLogger } from "@moat/shared";
import { exchangeRaw } from "../../client-proxy/test/fuzz-requests.js";
import { type RunningAPI, startAPI } from "../src/index.js";
import { FakeOrchestrator } from "./fakes/fake-orchestrator.js";
import { backends, createSandbox, startTestAPI, type TestAPI } from "./helpers.js";
import { expectError } from "./template-helpers.js";

const ADMIN_TOKEN = "fuzz-admin-token-0123456789";

describe("API fuzz regressions", () => {
  let t: TestAPI;
  before(async () => {
    t = await startTestAPI(backends[0]!, { adminToken: ADMIN_TOKEN });
  });
  after(() => t.close());

  // PostgreSQL text cannot hold NUL: these reached the database and answered 500.
  test("a NUL character in the URL or a JSON body is a 400, not a database error", async () => {
    const nul = /NUL character/;
    await expectError(await t.request("/sandboxes/a%00b"), 400, nul);
    await expectError(await t.request("/sandboxes/a%00b/logs"), 400, nul);
    await expectError(await t.request("/v2/sandboxes?template=a%00"), 400, nul);
    await expectError(await t.request(`/sandboxes?metadata=${"%00".repeat(3)}`), 400, nul);
    await expectError(
      await t.request("/internal/catalog/a%00b", { key: null, headers: { "X-Admin-Token": ADMIN_TOKEN } }),
      400,
      nul,
    );
    await expectError(
      await t.request("/v2/sandboxes", {
        method: "POST",
        json: { templateID: "base", metadata: { a: "\u0000" } },
      }),
      400,
      nul,
    );
    // Encoded twice, as the SDK sends metadata filters: the NUL appears at the second decoding.
    await expectError(await t.request("/v2/sandboxes?metadata=a%253D%2500"), 400, nul);
  });

  test("an escaped backslash before u0000 is text, not a NUL", async () => {
    const { sandboxID } = await createSandbox(t, { metadata: { a: "\\u0000" } });
    const res = await t.request(`/sandboxes/${sandboxID}`);
    const body = (await res.json()) as { metadata: Record<string, string> };
    if (body.metadata.a !== "\\u0000")
      throw new Error(`metadata came back as ${JSON.stringify(body.metadata)}`);
  });
});

/** Status line, headers and body of a raw reply. */
function parse(reply: string) {
  const cut = reply.indexOf("\r\n\r\n");
  const head = reply.slice(0, cut);
  return { status: Number(/^HTTP\/1\.1 (\d{3})/.exec(head)?.[1]), head, body: reply.slice(cut + 4) };
}

describe("API fuzz regressions on a listening server", () => {
  const fake = new FakeOrchestrator();
  let api: RunningAPI;
  before(async () => {
    api = await startAPI({
      dataDir: "/nonexistent-moat-test",
      databaseURL: "memory://",
      port: 0,
      orchestrators: [{ id: "node-1", transport: fake.transport() }],
      logger: createNoopLogger(),
    });
  });
  after(async () => {
    await api.close();
    fake.close();
  });

  // Node answered these by itself, with an empty body.
  test("malformed HTTP and headers too large get the API's JSON error", async () => {
    const malformed = parse(await exchangeRaw(api.port, "\r\n\r\n "));
    assert.equal(malformed.status, 400, malformed.head);
    assert.deepEqual(Object.keys(JSON.parse(malformed.body)).sort(), ["code", "message"]);
    const big = parse(
      await exchangeRaw(api.port, `GET / HTTP/1.1\r\nHost: x\r\nX: ${"b".repeat(70_000)}\r\n\r\n`),
    );
    assert.equal(big.status, 431, big.head);
    assert.equal((JSON.parse(big.body) as { code: number }).code, 431);
    const head = parse(await exchangeRaw(api.port, "HEAD \\x HTTP/1.1\r\nHost: x\r\n\r\n"));
    assert.equal(head.status, 400, head.head);
    assert.equal(head.body, "", "no body in the answer to a HEAD");
  });

  // The adapter answered these with an empty 400.
  test("a request without a Host is served; an unusable Host is a JSON 400", async () => {
    const hostless = parse(await exchangeRaw(api.port, "GET /health HTTP/1.1\r\nConnection: close\r\n\r\n"));
    assert.equal(hostless.status, 200, hostless.head);
    const bad = parse(
      await exchangeRaw(api.port, "GET /health HTTP/1.1\r\nHost: a b\r\nConnection: close\r\n\r\n"),
    );
    assert.equal(bad.status, 400, bad.head);
    assert.equal((JSON.parse(bad.body) as { code: number }).code, 400);
  });
});
