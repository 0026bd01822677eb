/**
 * The node proxy on loopback, alone and behind the client proxy: local servers play the sandboxes'
 * ports, the node's registry is a map, and the client proxy's catalog names the node proxy.
 */
import assert from "node:assert/strict";
import { once } from "node:events";
import http from "node:http";
import type { AddressInfo } from "node:net";
import { after, before, describe, test } from "node:test";
import { type CatalogEntry, createNoopLogger, type SandboxCatalog } from "@moat/shared";
import { WebSocket, WebSocketServer } from "ws";
import { type ClientProxy, type NodeProxy, startClientProxy, startNodeProxy } from "../src/index.js";

const TOKEN = "node-token-for-tests-0123456789abcdef";
const DOMAIN = "moat.local";

class MemoryCatalog implements SandboxCatalog {
  readonly entries = new Map<string, CatalogEntry>();
  async lookup(sandboxID: string) {
    return this.entries.get(sandboxID);
  }
}

/** A sandbox port that answers with who it is and the headers it got. */
async function sandboxServer(name: string) {
  const server = http.createServer((req, res) => {
    res.writeHead(200, { "content-type": "application/json" });
    res.end(JSON.stringify({ name, headers: req.headers, url: req.url }));
  });
  const wss = new WebSocketServer({ server });
  wss.on("connection", (ws) => ws.on("message", (data) => ws.send(`${name}:${data.toString()}`)));
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  return { server, wss, port: (server.address() as AddressInfo).port };
}

/** A GET with exactly these headers (fetch would not send a Host of our choosing). */
async function request(port: number, headers: Record<string, string>, path = "/") {
  const req = http.request({ host: "127.0.0.1", port, path, headers, agent: false });
  req.end();
  const [res] = (await once(req, "response")) as [http.IncomingMessage];
  const chunks: Buffer[] = [];
  for await (const chunk of res) chunks.push(chunk as Buffer);
  const text = Buffer.concat(chunks).toString();
  return {
    status: res.statusCode ?? 0,
    headers: new Headers(res.headers as Record<string, string>),
    body: text ? JSON.parse(text) : undefined,
  };
}

describe("node proxy", () => {
  const registry = new Map<string, string>();
  const catalog = new MemoryCatalog();
  let one: Awaited<ReturnType<typeof sandboxServer>>;
  let two: Awaited<ReturnType<typeof sandboxServer>>;
  let node: NodeProxy;
  let proxy: ClientProxy;

  before(async () => {
    one = await sandboxServer("one");
    two = await sandboxServer("two");
    node = await startNodeProxy({
      host: "127.0.0.1",
      port: 0,
      token: TOKEN,
      lookup: (id) => registry.get(id),
      logger: createNoopLogger(),
    });
    proxy = await startClientProxy({
      port: 0,
      domain: DOMAIN,
      catalog,
      nodeToken: TOKEN,
      logger: createNoopLogger(),
    });
    registry.set("sbxone", "127.0.0.1");
    registry.set("sbxtwo", "127.0.0.1");
    for (const id of ["sbxone", "sbxtwo"]) {
      catalog.entries.set(id, {
        sandboxID: id,
        state: "running",
        hostAddress: "127.0.0.1",
        autoResume: false,
        nodeID: "n1",
        nodeProxyURL: `http://127.0.0.1:${node.port}`,
      });
    }
  });

  after(async () => {
    await proxy?.close();
    await node?.close();
    for (const s of [one, two]) {
      s?.wss.close();
      s?.server.close();
    }
  });

  test("a request without the node token, or with a wrong one, gets 401 and reaches no sandbox", async () => {
    const route = { "e2b-sandbox-id": "sbxone", "e2b-sandbox-port": String(one.port) };
    const missing = await request(node.port, route);
    assert.equal(missing.status, 401);
    assert.match(missing.body.message, /Missing node token/);
    const wrong = await request(node.port, { ...route, "x-moat-node-token": `${TOKEN}x` });
    assert.equal(wrong.status, 401);
    assert.match(wrong.body.message, /Wrong node token/);
    const right = await request(node.port, { ...route, "x-moat-node-token": TOKEN });
    assert.equal(right.status, 200);
    assert.equal(right.body.name, "one");
    // The token stops at the node proxy, and so do the routing headers.
    assert.equal(right.body.headers["x-moat-node-token"], undefined);
    assert.equal(right.body.headers["e2b-sandbox-id"], undefined);
  });

  test("a sandbox not on the node gets the client proxy's 502 JSON, marked for the client proxy", async () => {
    const res = await request(node.port, {
      "e2b-sandbox-id": "elsewhere1",
      "e2b-sandbox-port": "8080",
      "x-moat-node-token": TOKEN,
    });
    assert.equal(res.status, 502);
    assert.deepEqual(res.body, { message: "The sandbox was not found", sandboxId: "elsewhere1", code: 502 });
    assert.equal(res.headers.get("x-moat-node-proxy-error"), "not-found");
  });

  test("envd's internal paths are refused at the node proxy too", async () => {
    const res = await request(
      node.port,
      { "e2b-sandbox-id": "sbxone", "e2b-sandbox-port": "49983", "x-moat-node-token": TOKEN },
      "/init",
    );
    assert.equal(res.status, 404);
  });

  test("through the client proxy: the route decides the sandbox, whatever the client sent for the headers", async () => {
    const res = await request(proxy.port, {
      host: `${one.port}-sbxone.${DOMAIN}`,
      // A client's attempt to steer the node proxy: dropped, replaced by the routing decision.
      "e2b-sandbox-id": "sbxtwo",
      "e2b-sandbox-port": String(two.port),
      "x-moat-node-token": "forged-token-forged-token-forged-token",
    });
    assert.equal(res.status, 200);
    assert.equal(res.body.name, "one");
    assert.equal(res.body.headers["x-moat-node-token"], undefined);
  });

  test("a client's node token header never reaches a sandbox reached directly", async () => {
    const direct = await startClientProxy({
      port: 0,
      domain: DOMAIN,
      catalog: {
        lookup: async (id) =>
          id === "sbxone"
            ? { sandboxID: id, state: "running", hostAddress: "127.0.0.1", autoResume: false }
            : undefined,
      },
      logger: createNoopLogger(),
    });
    try {
      const res = await request(direct.port, {
        "e2b-sandbox-id": "sbxone",
        "e2b-sandbox-port": String(one.port),
        "x-moat-node-token": TOKEN,
      });
      assert.equal(res.body.name, "one");
      assert.equal(res.body.headers["x-moat-node-token"], undefined);
    } finally {
      await direct.close();
    }
  });

  test("a WebSocket goes through the client proxy and the node proxy", async () => {
    const ws = new WebSocket(`ws://127.0.0.1:${proxy.port}/`, {
      headers: { "e2b-sandbox-id": "sbxtwo", "e2b-sandbox-port": String(two.port) },
    });
    await once(ws, "open");
    ws.send("ping");
    const [data] = await once(ws, "message");
    assert.equal(String(data), "two:ping");
    ws.close();
  });

  test("a sandbox that left the node while the catalog still names it: 502 without the node's marker", async () => {
    registry.delete("sbxtwo");
    try {
      const res = await request(proxy.port, {
        "e2b-sandbox-id": "sbxtwo",
        "e2b-sandbox-port": String(two.port),
      });
      assert.equal(res.status, 502);
      assert.equal(res.body.sandboxId, "sbxtwo");
      assert.equal(res.headers.get("x-moat-node-proxy-error"), null);
    } finally {
      registry.set("sbxtwo", "127.0.0.1");
    }
  });

  test("a node proxy that is down: 502 sandbox unreachable, not port closed", async () => {
    catalog.entries.set("sbxdown", {
      sandboxID: "sbxdown",
      state: "running",
      hostAddress: "127.0.0.1",
      autoResume: false,
      nodeProxyURL: "http://127.0.0.1:1",
    });
    const res = await request(proxy.port, { "e2b-sandbox-id": "sbxdown", "e2b-sandbox-port": "8080" });
    assert.equal(res.status, 502);
    assert.equal(res.body.message, "The sandbox is not reachable");
  });

  test("a node token under 32 characters is refused at start", async () => {
    await assert.rejects(
      startNodeProxy({ host: "127.0.0.1", port: 0, token: "short", lookup: () => undefined }),
      /at least 32/,
    );
  });
});
