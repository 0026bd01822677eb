/**
 * Counterexamples the proxy fuzzers (fuzz.test.ts, tests/integration/fuzz/proxy.test.ts) found,
 * shrunk, as plain requests: each stays fixed whatever seed the fuzzers run with.
 */
import assert from "node:assert/strict";
import http from "node:http";
import type { AddressInfo } from "node:net";
import { after, before, describe, test } from "node:test";
import { createNoopLogger, type SandboxCatalog } from "@moat/shared";
import { type ClientProxy, startClientProxy } from "../src/index.js";
import { exchangeRaw } from "./fuzz-requests.js";

/** One running sandbox on loopback, whose ports are all closed (the tests pick a free one). */
const catalog: SandboxCatalog = {
  lookup: async (sandboxID) =>
    sandboxID === "run1"
      ? { sandboxID, state: "running", hostAddress: "127.0.0.1", autoResume: false }
      : undefined,
};

async function closedPort(): Promise<number> {
  const server = http.createServer();
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as AddressInfo;
  await new Promise((resolve) => server.close(resolve));
  return port;
}

/** Status line, headers and body of a raw reply. */
function parse(reply: string) {
  const cut = reply.indexOf("\r\n\r\n");
  const head = reply.slice(0, cut);
  return { status: Number(/^HTTP\/1\.1 (\d{3})/.exec(head)?.[1]), head, body: reply.slice(cut + 4) };
}

describe("client proxy fuzz regressions", () => {
  let proxy: ClientProxy;
  before(async () => {
    proxy = await startClientProxy({
      port: 0,
      host: "127.0.0.1",
      domain: "moat.local",
      catalog,
      logger: createNoopLogger(),
    });
  });
  after(() => proxy.close());

  test("malformed HTTP gets a JSON error, not Node's bare 400", async () => {
    const reply = parse(await exchangeRaw(proxy.port, "\r\n\r\n "));
    assert.equal(reply.status, 400, reply.head);
    assert.match(reply.head, /content-type: application\/json/i);
    const body = JSON.parse(reply.body) as { code: number; message: string };
    assert.equal(body.code, 400);
    assert.match(body.message, /malformed HTTP request/);
  });

  test("headers too large get a JSON 431", async () => {
    const reply = parse(
      await exchangeRaw(
        proxy.port,
        `GET / HTTP/1.1\r\nHost: localhost\r\nX-Big: ${"b".repeat(70_000)}\r\n\r\n`,
      ),
    );
    assert.equal(reply.status, 431, reply.head);
    assert.equal((JSON.parse(reply.body) as { code: number }).code, 431);
  });

  test("a request without a Host is routed (and refused) by the proxy, with a JSON error", async () => {
    const reply = parse(await exchangeRaw(proxy.port, "GET /files HTTP/1.1\r\nConnection: close\r\n\r\n"));
    assert.equal(reply.status, 400, reply.head);
    assert.match((JSON.parse(reply.body) as { message: string }).message, /names no sandbox/);
  });

  test("a refused HEAD upgrade is answered without a body (a HEAD answer has none)", async () => {
    const reply = await exchangeRaw(
      proxy.port,
      "HEAD /init HTTP/1.1\r\nHost: localhost\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
    );
    const { status, head, body } = parse(reply);
    assert.equal(status, 400, head);
    assert.equal(body, "", "no body after the headers of a HEAD answer");
  });

  test("a HEAD the parser rejects is answered without a body", async () => {
    const reply = parse(await exchangeRaw(proxy.port, "HEAD \\init HTTP/1.1\r\nHost: localhost\r\n\r\n"));
    assert.equal(reply.status, 400, reply.head);
    assert.equal(reply.body, "");
  });

  test("a HEAD upgrade to a closed port gets its 502 without a body", async () => {
    const port = await closedPort();
    const reply = parse(
      await exchangeRaw(
        proxy.port,
        `HEAD / HTTP/1.1\r\nHost: ${port}-run1.moat.local\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n`,
      ),
    );
    assert.equal(reply.status, 502, reply.head);
    assert.equal(reply.body, "");
  });

  test("CONNECT gets a JSON 405 instead of a silent close", async () => {
    const reply = parse(
      await exchangeRaw(proxy.port, "CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n"),
    );
    assert.equal(reply.status, 405, reply.head);
    assert.equal((JSON.parse(reply.body) as { code: number }).code, 405);
  });
});
