/**
 * A fleet's traffic path on one machine: a real orchestrator with its node proxy, an API writing
 * the routing catalog to a real Redis (the node listed with its proxy URL), and a client proxy of
 * its own reading that catalog. The unmodified e2b SDK goes through the client proxy, which sends
 * everything to the node proxy with the node token: commands with streamed output, files, a
 * sandbox port with an upgraded (tunnelled) connection, and auto-resume of a paused sandbox
 * through the API's internal route. The node proxy refuses a request without the token.
 */
import assert from "node:assert/strict";
import { once } from "node:events";
import { mkdtemp, rm } from "node:fs/promises";
import http from "node:http";
import type { Socket } from "node:net";
import { tmpdir } from "node:os";
import path from "node:path";
import { before, describe, test } from "node:test";
import { type RunningAPI, startAPI } from "@moat/api";
import { type ClientProxy, startClientProxy } from "@moat/client-proxy";
import { type CatalogEntry, createNoopLogger, REDIS_SANDBOX_KEY_PREFIX } from "@moat/shared";
import { Sandbox } from "e2b";
import { Redis } from "ioredis";
import { startRedis, type TestRedis } from "../../../packages/shared/test/redis-server.js";
import { withOrchestrator } from "../helpers/with-orchestrator.js";

const DOMAIN = "moat.local";
const UPGRADE_PORT = 8765;

/** Answers any request with 101 and then echoes what it reads: an upgraded protocol of its own. */
const ECHO_UPGRADE_SERVER = `
import socket, threading
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", ${UPGRADE_PORT}))
s.listen()
def handle(c):
    data = b""
    while b"\\r\\n\\r\\n" not in data:
        more = c.recv(1024)
        if not more:
            return
        data += more
    c.sendall(b"HTTP/1.1 101 Switching Protocols\\r\\nUpgrade: echo\\r\\nConnection: Upgrade\\r\\n\\r\\n")
    while True:
        d = c.recv(1024)
        if not d:
            break
        c.sendall(d)
while True:
    c, _ = s.accept()
    threading.Thread(target=handle, args=(c,), daemon=True).start()
`;

describe("fleet routing: client proxy → node proxy, catalog in Redis", { timeout: 300_000 }, () => {
  let redis: TestRedis | undefined;
  let api: RunningAPI | undefined;
  let proxy: ClientProxy | undefined;
  let dataDir: string | undefined;
  const orch = withOrchestrator({
    beforeTeardown: async () => {
      await proxy?.close();
      await api?.close();
      await redis?.close();
      if (dataDir) await rm(dataDir, { recursive: true, force: true });
    },
  });

  before(async () => {
    redis = await startRedis();
    dataDir = await mkdtemp(path.join(tmpdir(), "moat-test-api-"));
    api = await startAPI({
      dataDir,
      databaseURL: "memory://",
      port: 0,
      domain: DOMAIN,
      redisURL: redis.url,
      nodeToken: orch.token,
      orchestrators: [
        {
          id: "node-a",
          url: `http://127.0.0.1:${orch.port}`,
          token: orch.token,
          proxyURL: `http://127.0.0.1:${orch.proxyPort}`,
        },
      ],
      logger: createNoopLogger(),
    });
    const { apiKey } = await api.bootstrap();
    proxy = await startClientProxy({
      port: 0,
      domain: DOMAIN,
      redisURL: redis.url,
      apiURL: api.url,
      nodeToken: orch.token,
      logger: createNoopLogger(),
    });
    delete process.env.E2B_DEBUG;
    process.env.E2B_API_KEY = apiKey;
    process.env.E2B_API_URL = api.url;
    process.env.E2B_SANDBOX_URL = `http://127.0.0.1:${proxy.port}`;
    process.env.E2B_DOMAIN = DOMAIN;
  });

  test("commands (streamed), files and an upgraded port through the node proxy", async () => {
    const sbx = await Sandbox.create("base");
    try {
      const reader = new Redis(redis!.url);
      const stored = JSON.parse(
        (await reader.get(REDIS_SANDBOX_KEY_PREFIX + sbx.sandboxId)) ?? "{}",
      ) as CatalogEntry;
      reader.disconnect();
      assert.equal(stored.nodeID, "node-a");
      assert.equal(stored.nodeProxyURL, `http://127.0.0.1:${orch.proxyPort}`);

      const chunks: Array<{ text: string; at: number }> = [];
      const run = await sbx.commands.run("for i in 1 2 3; do echo line$i; sleep 0.3; done", {
        onStdout: (text) => void chunks.push({ text, at: Date.now() }),
      });
      assert.equal(run.stdout, "line1\nline2\nline3\n");
      assert.ok(chunks.length >= 2, "output arrives as it is written, not at the end");
      assert.ok(chunks.at(-1)!.at - chunks[0]!.at >= 300, "the chunks are spread over the run");

      await sbx.files.write("/home/user/fleet.txt", "through the node proxy");
      assert.equal(await sbx.files.read("/home/user/fleet.txt"), "through the node proxy");

      await sbx.files.write("/home/user/echo.py", ECHO_UPGRADE_SERVER);
      await sbx.commands.run("python3 /home/user/echo.py", { background: true, timeoutMs: 0 });
      let echoed = "";
      for (let attempt = 0; attempt < 50 && echoed === ""; attempt++) {
        echoed = await upgradeEcho(proxy!.port, sbx.sandboxId, "hello tunnel").catch(() => "");
        if (echoed === "") await new Promise((r) => setTimeout(r, 200));
      }
      assert.equal(echoed, "hello tunnel");
    } finally {
      await sbx.kill();
    }
  });

  test("a paused sandbox with autoResume is resumed by traffic through the proxy", async () => {
    const sbx = await Sandbox.create("base", { lifecycle: { onTimeout: "pause", autoResume: true } });
    try {
      await sbx.files.write("/home/user/kept.txt", "before the pause");
      assert.equal(await sbx.pause(), true);
      assert.equal((await sbx.getInfo()).state, "paused");
      // The proxy finds it paused in Redis, asks the API to resume it, and forwards.
      assert.equal(await sbx.files.read("/home/user/kept.txt"), "before the pause");
      assert.equal((await sbx.getInfo()).state, "running");
    } finally {
      await sbx.kill();
    }
  });

  test("the node proxy refuses a request without the node token", async () => {
    const sbx = await Sandbox.create("base");
    try {
      const res = await fetch(`http://127.0.0.1:${orch.proxyPort}/health`, {
        headers: { "e2b-sandbox-id": sbx.sandboxId, "e2b-sandbox-port": "49983" },
      });
      assert.equal(res.status, 401);
    } finally {
      await sbx.kill();
    }
  });
});

/** Upgrades a connection to the sandbox's echo port through the client proxy and echoes `text`. */
async function upgradeEcho(proxyPort: number, sandboxID: string, text: string): Promise<string> {
  const req = http.request({
    host: "127.0.0.1",
    port: proxyPort,
    headers: { host: `${UPGRADE_PORT}-${sandboxID}.${DOMAIN}`, connection: "Upgrade", upgrade: "echo" },
    agent: false,
  });
  req.end();
  const result = await Promise.race([
    once(req, "upgrade") as Promise<[http.IncomingMessage, Socket, Buffer]>,
    once(req, "response").then(() => {
      throw new Error("not upgraded");
    }),
  ]);
  const socket = result[1];
  try {
    socket.write(text);
    let got = "";
    for await (const chunk of socket) {
      got += String(chunk);
      if (got.length >= text.length) break;
    }
    return got;
  } finally {
    socket.destroy();
  }
}
