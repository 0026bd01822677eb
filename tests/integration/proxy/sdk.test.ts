/**
 * The official e2b SDK against a real gVisor sandbox, through the client proxy: the SDK's
 * `sandboxUrl` points at the proxy, so every envd call carries E2b-Sandbox-Id/Port and the proxy
 * routes it by a small test catalog to the sandbox's host address. A user port is reached by Host.
 */
import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import { once } from "node:events";
import http from "node:http";
import { before, describe, test } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { type ClientProxy, startClientProxy } from "@moat/client-proxy";
import { type CatalogEntry, createNoopLogger, type SandboxCatalog } from "@moat/shared";
import type { SandboxInfo } from "@moat/shared/gen/orchestrator";
import { FilesystemEventType, Sandbox } from "e2b";
import { createSandbox, sdkFor } from "../helpers/orchestrator.js";
import { withOrchestrator } from "../helpers/with-orchestrator.js";

const DOMAIN = "moat.local";
const ACCESS_TOKEN = "proxy-test-envd-token";

/** The part of the API's catalog the proxy reads, held in a map. */
class TestCatalog implements SandboxCatalog {
  readonly entries = new Map<string, CatalogEntry>();

  async lookup(sandboxID: string): Promise<CatalogEntry | undefined> {
    return this.entries.get(sandboxID);
  }
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)]!;
}

/** A plain HTTP GET to the proxy with a chosen Host, as a browser on `<port>-<id>.<domain>` sends it. */
async function getByHost(proxyPort: number, host: string, path: string) {
  const req = http.request({ host: "127.0.0.1", port: proxyPort, path, headers: { host }, agent: false });
  req.end();
  const [res] = (await once(req, "response")) as [http.IncomingMessage];
  const chunks: Buffer[] = [];
  for await (const chunk of res) chunks.push(chunk as Buffer);
  return { status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString() };
}

describe("client proxy: the official SDK through the proxy to a gVisor sandbox", { timeout: 600_000 }, () => {
  const catalog = new TestCatalog();
  let proxy: ClientProxy;
  let info: SandboxInfo;
  let sandboxID: string;
  let sbx: Sandbox;
  const orch = withOrchestrator({
    beforeTeardown: async () => {
      await proxy?.close();
    },
  });

  before(async () => {
    info = await createSandbox(orch, { accessToken: ACCESS_TOKEN });
    sandboxID = info.config!.sandboxId;
    catalog.entries.set(sandboxID, {
      sandboxID,
      state: "running",
      hostAddress: info.hostAddress,
      envdAccessToken: ACCESS_TOKEN,
      autoResume: false,
    });
    proxy = await startClientProxy({
      port: 0,
      host: "127.0.0.1",
      domain: DOMAIN,
      catalog,
      logger: createNoopLogger(),
    });
    sbx = new Sandbox({
      sandboxId: sandboxID,
      envdVersion: info.envdVersion,
      envdAccessToken: ACCESS_TOKEN,
      sandboxUrl: `http://127.0.0.1:${proxy.port}`,
      apiKey: "e2b_x",
    });
  });

  test("commands.run returns stdout", async () => {
    const result = await sbx.commands.run("echo hello from $E2B_SANDBOX_ID; whoami");
    assert.equal(result.exitCode, 0);
    assert.equal(result.stdout, `hello from ${sandboxID}\nuser\n`);
  });

  test("a wrong access token is refused by envd, through the proxy", async () => {
    const wrong = new Sandbox({
      sandboxId: sandboxID,
      envdVersion: info.envdVersion,
      envdAccessToken: "not-the-token",
      sandboxUrl: `http://127.0.0.1:${proxy.port}`,
      apiKey: "e2b_x",
    });
    await assert.rejects(wrong.commands.run("true"), /unauthenticated|401|access token/i);
  });

  test("a background command's output streams through the proxy as it is produced", async () => {
    const arrivals: { line: string; at: number }[] = [];
    const started = Date.now();
    const handle = await sbx.commands.run("for i in 1 2 3; do echo line$i; sleep 0.6; done", {
      background: true,
      onStdout: (data) => {
        for (const line of data.split("\n").filter(Boolean))
          arrivals.push({ line, at: Date.now() - started });
      },
    });
    const result = await handle.wait();
    assert.equal(result.stdout, "line1\nline2\nline3\n");
    assert.deepEqual(
      arrivals.map((a) => a.line),
      ["line1", "line2", "line3"],
    );
    // Buffering anywhere on the path would deliver all three lines together at the end.
    assert.ok(arrivals[2]!.at - arrivals[0]!.at >= 900, `lines arrived at ${arrivals.map((a) => a.at)} ms`);
  });

  test("files: 10 MB written and read back through the proxy", async () => {
    const data = randomBytes(10 * 1024 * 1024);
    const path = "/home/user/big.bin";
    const started = performance.now();
    await sbx.files.write(path, data.buffer.slice(data.byteOffset, data.byteOffset + data.length));
    const back = await sbx.files.read(path, { format: "bytes" });
    const ms = performance.now() - started;
    assert.equal(back.length, data.length);
    assert.equal(
      createHash("sha256").update(back).digest("hex"),
      createHash("sha256").update(data).digest("hex"),
    );
    console.log(`# files write+read 10 MB through the proxy: ${ms.toFixed(0)} ms`);
  });

  test("watchDir events stream through the proxy", async () => {
    const dir = "/home/user/watched";
    await sbx.files.makeDir(dir);
    const events: { name: string; type: FilesystemEventType }[] = [];
    const watcher = await sbx.files.watchDir(dir, (event) => {
      events.push({ name: event.name, type: event.type });
    });
    try {
      await sbx.files.write(`${dir}/note.txt`, "hello");
      const deadline = Date.now() + 10_000;
      while (!events.some((e) => e.name === "note.txt") && Date.now() < deadline) await sleep(50);
      assert.ok(
        events.some(
          (e) =>
            e.name === "note.txt" && [FilesystemEventType.CREATE, FilesystemEventType.WRITE].includes(e.type),
        ),
        `events: ${JSON.stringify(events)}`,
      );
    } finally {
      await watcher.stop();
    }
  });

  test("an HTTP server in the sandbox is reached by Host <port>-<sandboxID>.<domain>", async () => {
    const host = `8000-${sandboxID}.${DOMAIN}`;
    const closed = await getByHost(proxy.port, host, "/");
    assert.equal(closed.status, 502);
    const { requestId, ...closedBody } = JSON.parse(closed.body);
    assert.match(requestId, /^[0-9a-f-]{36}$/, "the proxy's own error carries a request id");
    assert.deepEqual(closedBody, {
      sandboxId: sandboxID,
      message: "The sandbox is running but port is not open",
      port: 8000,
      code: 502,
    });

    await sbx.files.write("/home/user/site/index.html", "<h1>served from the sandbox</h1>\n");
    const server = await sbx.commands.run("python3 -m http.server 8000 --directory /home/user/site", {
      background: true,
    });
    try {
      let reply = { status: 0, body: "" };
      const deadline = Date.now() + 30_000;
      while (Date.now() < deadline) {
        reply = await getByHost(proxy.port, host, "/index.html");
        if (reply.status === 200) break;
        await sleep(200);
      }
      assert.equal(reply.status, 200, reply.body);
      assert.equal(reply.body, "<h1>served from the sandbox</h1>\n");
      // The shared host with routing headers reaches the same port.
      const res = await fetch(`http://127.0.0.1:${proxy.port}/index.html`, {
        headers: { "E2b-Sandbox-Id": sandboxID, "E2b-Sandbox-Port": "8000" },
      });
      assert.equal(res.status, 200);
      assert.equal(await res.text(), "<h1>served from the sandbox</h1>\n");
    } finally {
      await server.kill();
    }
  });

  test("round-trip overhead of the proxy: commands.run('true') and envd's /health", async () => {
    const direct = sdkFor(info);
    const headers = { "E2b-Sandbox-Id": sandboxID, "E2b-Sandbox-Port": "49983" };
    const timed = async (fn: () => Promise<unknown>) => {
      const t0 = performance.now();
      await fn();
      return performance.now() - t0;
    };
    const run = { direct: [] as number[], proxied: [] as number[] };
    const health = { direct: [] as number[], proxied: [] as number[] };
    for (let i = 0; i < 5; i++) {
      await direct.commands.run("true");
      await sbx.commands.run("true");
    }
    // Alternating the two paths call by call keeps drift on a shared machine out of the difference.
    for (let i = 0; i < 40; i++) {
      run.direct.push(await timed(() => direct.commands.run("true")));
      run.proxied.push(await timed(() => sbx.commands.run("true")));
      health.direct.push(
        await timed(async () => (await fetch(`http://${info.hostAddress}:49983/health`)).arrayBuffer()),
      );
      health.proxied.push(
        await timed(async () =>
          (await fetch(`http://127.0.0.1:${proxy.port}/health`, { headers })).arrayBuffer(),
        ),
      );
    }
    const [rd, rp, hd, hp] = [run.direct, run.proxied, health.direct, health.proxied].map(median) as [
      number,
      number,
      number,
      number,
    ];
    console.log(
      `# commands.run("true") median: direct ${rd.toFixed(2)} ms, through the proxy ${rp.toFixed(2)} ms; ` +
        `GET /health median: direct ${hd.toFixed(2)} ms, through the proxy ${hp.toFixed(2)} ms`,
    );
    // Generous bounds: they catch a proxy that buffers, or stalls small writes (Nagle, 40 ms).
    assert.ok(hp - hd < 5, `proxy overhead on /health ${hp - hd} ms`);
    assert.ok(rp - rd < 30, `proxy overhead on commands.run ${rp - rd} ms`);
  });

  test("after the sandbox is killed and leaves the catalog, isRunning() is false (502 from /health)", async () => {
    assert.equal(await sbx.isRunning(), true);
    await orch.client.delete({ sandboxId: sandboxID });
    catalog.entries.delete(sandboxID);
    assert.equal(await sbx.isRunning(), false);
    const health = await fetch(`http://127.0.0.1:${proxy.port}/health`, {
      headers: { "E2b-Sandbox-Id": sandboxID, "E2b-Sandbox-Port": "49983" },
    });
    assert.equal(health.status, 502);
    assert.deepEqual(await health.json(), {
      message: "The sandbox was not found",
      sandboxId: sandboxID,
      code: 502,
      requestId: health.headers.get("x-request-id"),
    });
    assert.ok(proxy.metrics().requestsByStatus["502"]! >= 2);
  });
});
