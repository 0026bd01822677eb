/**
 * The proxy end to end on loopback: an in-memory catalog points sandboxes at local servers that play
 * a sandbox's ports (127.0.0.1 for user ports, 127.0.0.2:49983 for envd's).
 */
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { once } from "node:events";
import http from "node:http";
import net, { type AddressInfo, type Socket } from "node:net";
import { performance } from "node:perf_hooks";
import { after, before, describe, test } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { type CatalogEntry, createNoopLogger, fileSignature, type SandboxCatalog } from "@moat/shared";
import { WebSocket, WebSocketServer } from "ws";
import { UpstreamPool } from "../src/forward.js";
import { type ClientProxy, startClientProxy } from "../src/index.js";

const DOMAIN = "moat.local";
const ENVD_PORT = 49983;

class MemoryCatalog implements SandboxCatalog {
  readonly entries = new Map<string, CatalogEntry>();
  resumeCalls = 0;

  put(entry: Omit<CatalogEntry, "autoResume"> & { autoResume?: boolean }): void {
    this.entries.set(entry.sandboxID, { autoResume: false, ...entry });
  }

  async lookup(sandboxID: string): Promise<CatalogEntry | undefined> {
    return this.entries.get(sandboxID);
  }

  async findByAccessToken(verifies: (token: string) => boolean): Promise<CatalogEntry | undefined> {
    return [...this.entries.values()].find((e) => e.envdAccessToken && verifies(e.envdAccessToken));
  }

  async resume(sandboxID: string): Promise<CatalogEntry | undefined> {
    this.resumeCalls++;
    await sleep(50);
    const entry = this.entries.get(sandboxID);
    if (!entry) return undefined;
    const resumed: CatalogEntry = { ...entry, state: "running" };
    this.entries.set(sandboxID, resumed);
    return resumed;
  }
}

interface Deferred<T = void> {
  promise: Promise<T>;
  resolve(value: T): void;
}

function deferred<T = void>(): Deferred<T> {
  let resolve!: (value: T) => void;
  const promise = new Promise<T>((r) => {
    resolve = r;
  });
  return { promise, resolve };
}

function within<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  return Promise.race([
    promise,
    sleep(ms, undefined, { ref: false }).then(() => {
      throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    }),
  ]);
}

/** What the fake sandbox port saw and the hooks tests hold on to. */
const seen = {
  connections: 0,
  streamGate: deferred(),
  hangClosed: deferred(),
  firstUploadChunk: deferred(),
  uploadAborted: deferred(),
  wsHost: "",
};

/** A sandbox's user port: echo, streams, uploads, resets, and a WebSocket echo on /ws. */
function sandboxApp(req: http.IncomingMessage, res: http.ServerResponse): void {
  const url = new URL(req.url ?? "/", "http://x");
  switch (url.pathname) {
    case "/stream":
      res.writeHead(200, { "content-type": "application/x-ndjson" });
      res.write('{"n":1}\n');
      void seen.streamGate.promise.then(() => res.end('{"n":2}\n'));
      return;
    case "/hang":
      res.writeHead(200, { "content-type": "text/event-stream" });
      res.write("data: first\n\n");
      res.on("close", () => seen.hangClosed.resolve());
      return;
    case "/reset":
      res.writeHead(200, { "content-type": "text/plain" });
      res.write("partial");
      setTimeout(() => req.socket.destroy(), 50);
      return;
    case "/download": {
      const total = Number(url.searchParams.get("bytes"));
      const chunk = Buffer.alloc(64 * 1024, 7);
      res.writeHead(200, { "content-type": "application/octet-stream", "content-length": total });
      let sent = 0;
      const pump = () => {
        while (sent < total) {
          const piece = chunk.subarray(0, Math.min(chunk.length, total - sent));
          sent += piece.length;
          if (!res.write(piece)) return void res.once("drain", pump);
        }
        res.end();
      };
      pump();
      return;
    }
    case "/upload-probe": {
      let first = true;
      req.on("data", () => {
        if (first) seen.firstUploadChunk.resolve();
        first = false;
      });
      req.on("close", () => {
        if (!req.complete) seen.uploadAborted.resolve();
      });
      req.on("end", () => res.end("done"));
      return;
    }
    case "/cookies":
      res.writeHead(201, "Made", [
        ["set-cookie", "a=1"],
        ["set-cookie", "b=2"],
        ["x-sandbox", "yes"],
      ]);
      res.end("made");
      return;
    default: {
      const hash = createHash("sha256");
      let length = 0;
      req.on("data", (chunk: Buffer) => {
        hash.update(chunk);
        length += chunk.length;
      });
      req.on("end", () => {
        const body = JSON.stringify({
          method: req.method,
          url: req.url,
          headers: req.headers,
          length,
          sha256: hash.digest("hex"),
          remotePort: req.socket.remotePort,
        });
        res.writeHead(200, { "content-type": "application/json" }).end(body);
      });
    }
  }
}

async function listen(server: http.Server, host: string, port = 0): Promise<number> {
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(port, host, () => {
      server.off("error", reject);
      resolve();
    });
  });
  return (server.address() as AddressInfo).port;
}

/** Binds envd's fixed port, waiting while another test file (the envd suites) still holds it. */
async function listenRetrying(server: http.Server, host: string, port: number): Promise<void> {
  const deadline = Date.now() + 30_000;
  for (;;) {
    try {
      await listen(server, host, port);
      return;
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== "EADDRINUSE" || Date.now() > deadline) throw error;
      await sleep(500);
    }
  }
}

async function freePort(): Promise<number> {
  const server = http.createServer();
  const port = await listen(server, "127.0.0.1");
  await new Promise((r) => server.close(r));
  return port;
}

interface Reply {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: Buffer;
}

const METRICS_TOKEN = "proxy-metrics-token-0123456789";

describe("client proxy", { timeout: 60_000 }, () => {
  const catalog = new MemoryCatalog();
  let proxy: ClientProxy;
  let userPort: number;
  const userServer = http.createServer(sandboxApp);
  const envdServer = http.createServer(sandboxApp);
  const wss = new WebSocketServer({ server: userServer, path: "/ws" });

  before(async () => {
    userServer.on("connection", () => seen.connections++);
    wss.on("connection", (socket, req) => {
      seen.wsHost = req.headers.host ?? "";
      socket.on("message", (data, isBinary) =>
        socket.send(isBinary ? data : `echo:${data}`, { binary: isBinary }),
      );
    });
    userPort = await listen(userServer, "127.0.0.1");
    await listenRetrying(envdServer, "127.0.0.2", ENVD_PORT);
    catalog.put({ sandboxID: "web", state: "running", hostAddress: "127.0.0.1" });
    catalog.put({
      sandboxID: "secured",
      state: "running",
      hostAddress: "127.0.0.1",
      trafficAccessToken: "traffic-secret",
    });
    catalog.put({
      sandboxID: "envd",
      state: "running",
      hostAddress: "127.0.0.2",
      envdAccessToken: "envd-secret",
      trafficAccessToken: "traffic-secret",
    });
    catalog.put({ sandboxID: "starting", state: "starting", hostAddress: "127.0.0.1" });
    catalog.put({ sandboxID: "stopping", state: "stopping", hostAddress: "127.0.0.1" });
    proxy = await startClientProxy({
      port: 0,
      host: "127.0.0.1",
      domain: DOMAIN,
      catalog,
      logger: createNoopLogger(),
      metricsToken: METRICS_TOKEN,
      transitionWaitMs: 400,
    });
  });

  after(async () => {
    await proxy.close();
    for (const client of wss.clients) client.terminate();
    wss.close();
    userServer.closeAllConnections();
    envdServer.closeAllConnections();
    await Promise.all([new Promise((r) => userServer.close(r)), new Promise((r) => envdServer.close(r))]);
  });

  function via(sandboxID: string, port: number = userPort): Record<string, string> {
    return { "E2b-Sandbox-Id": sandboxID, "E2b-Sandbox-Port": String(port) };
  }

  function open(
    path: string,
    options: { method?: string; headers?: Record<string, string>; port?: number } = {},
  ): http.ClientRequest {
    return http.request({
      host: "127.0.0.1",
      port: options.port ?? proxy.port,
      path,
      method: options.method ?? "GET",
      headers: { host: `127.0.0.1:${options.port ?? proxy.port}`, ...options.headers },
      agent: false,
    });
  }

  async function send(
    path: string,
    options: {
      method?: string;
      headers?: Record<string, string>;
      body?: Buffer | string;
      port?: number;
    } = {},
  ): Promise<Reply> {
    const req = open(path, options);
    req.end(options.body);
    const [res] = (await once(req, "response")) as [http.IncomingMessage];
    const chunks: Buffer[] = [];
    for await (const chunk of res) chunks.push(chunk as Buffer);
    return { status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks) };
  }

  /** The body; an error of the proxy's own has its request id, the X-Request-Id answered, taken out. */
  const json = (reply: Reply) => {
    const { requestId, ...rest } = JSON.parse(reply.body.toString());
    if (requestId !== undefined) assert.equal(requestId, reply.headers["x-request-id"]);
    return requestId === undefined ? JSON.parse(reply.body.toString()) : rest;
  };

  describe("routing", () => {
    test("routing headers on a shared host reach the sandbox's port, with Host rewritten", async () => {
      const reply = await send("/echo?x=1", {
        method: "POST",
        headers: { ...via("web"), "content-type": "text/plain", "x-custom": "kept" },
        body: "hello",
      });
      assert.equal(reply.status, 200);
      const echo = json(reply);
      assert.equal(echo.method, "POST");
      assert.equal(echo.url, "/echo?x=1");
      assert.equal(echo.length, 5);
      assert.equal(echo.headers.host, `127.0.0.1:${userPort}`);
      assert.equal(echo.headers["x-forwarded-host"], `127.0.0.1:${proxy.port}`);
      assert.equal(echo.headers["x-forwarded-for"], "127.0.0.1");
      assert.equal(echo.headers["x-custom"], "kept");
      assert.equal(echo.headers["e2b-sandbox-id"], undefined, "the routing headers stay at the edge");
      assert.equal(echo.headers["e2b-sandbox-port"], undefined);
    });

    test("the host form <port>-<sandboxID>.<domain>", async () => {
      const reply = await send("/echo", { headers: { host: `${userPort}-web.${DOMAIN}` } });
      assert.equal(reply.status, 200);
      assert.equal(json(reply).headers["x-forwarded-host"], `${userPort}-web.${DOMAIN}`);
    });

    test("hop-by-hop headers, including those Connection names, are not forwarded", async () => {
      const reply = await send("/echo", {
        headers: {
          ...via("web"),
          connection: "keep-alive, x-hop",
          "x-hop": "secret",
          "keep-alive": "timeout=5",
        },
      });
      const { headers } = json(reply);
      assert.equal(headers["x-hop"], undefined);
      assert.equal(headers["keep-alive"], undefined);
    });

    test("status, reason and repeated response headers pass through", async () => {
      const req = open("/cookies", { headers: via("web") });
      req.end();
      const [res] = (await once(req, "response")) as [http.IncomingMessage];
      res.resume();
      assert.equal(res.statusCode, 201);
      assert.equal(res.statusMessage, "Made");
      assert.deepEqual(res.headers["set-cookie"], ["a=1", "b=2"]);
      assert.equal(res.headers["x-sandbox"], "yes");
    });

    test("unroutable requests get 400 JSON", async () => {
      const badID = await send("/", {
        headers: { "E2b-Sandbox-Id": "Not_Valid", "E2b-Sandbox-Port": "8000" },
      });
      assert.equal(badID.status, 400);
      assert.equal(json(badID).code, 400);
      assert.match(json(badID).message, /Invalid sandbox ID/);
      const badPort = await send("/", { headers: via("web", 70000) });
      assert.match(json(badPort).message, /Invalid sandbox port/);
      const partner = await send("/", { headers: { "E2b-Sandbox-Id": "web" } });
      assert.equal(partner.status, 400);
      assert.match(json(partner).message, /Missing header: E2b-Sandbox-Port/);
      const host = await send("/", { headers: { host: "example.com" } });
      assert.equal(host.status, 400);
      assert.match(json(host).message, /names no sandbox/);
      const self = await send("/anything");
      assert.equal(self.status, 400);
    });

    test("GET /health on the proxy itself, but a sandbox's /health when routed", async () => {
      const own = await send("/health");
      assert.equal(own.status, 200);
      assert.deepEqual(json(own), { status: "ok" });
      const routed = await send("/health", { headers: via("nosuchsandbox", ENVD_PORT) });
      assert.equal(routed.status, 502);
      const byHost = await send("/health", { headers: { host: `49983-nosuchsandbox.${DOMAIN}` } });
      assert.equal(byHost.status, 502);
    });
  });

  describe("catalog", () => {
    test("an unknown sandbox is 502 JSON, and an HTML page for browsers", async () => {
      const reply = await send("/health", { headers: via("nosuchsandbox", ENVD_PORT) });
      assert.equal(reply.status, 502);
      assert.match(String(reply.headers["content-type"]), /^application\/json/);
      assert.deepEqual(json(reply), {
        message: "The sandbox was not found",
        sandboxId: "nosuchsandbox",
        code: 502,
      });
      const page = await send("/", {
        headers: { host: `8000-nosuchsandbox.${DOMAIN}`, accept: "text/html,application/xhtml+xml" },
      });
      assert.equal(page.status, 502);
      assert.match(String(page.headers["content-type"]), /^text\/html/);
      assert.match(page.body.toString(), /nosuchsandbox/);
      assert.match(page.body.toString(), /The sandbox was not found/);
    });

    test("a sandbox being killed is 409 at once; one still starting is 409 once the wait runs out", async () => {
      for (const id of ["starting", "stopping"]) {
        const started = performance.now();
        const reply = await send("/echo", { headers: via(id) });
        const waited = performance.now() - started;
        assert.ok(id === "starting" ? waited >= 350 : waited < 300, `${id} answered after ${waited} ms`);
        assert.equal(reply.status, 409);
        assert.deepEqual(json(reply), {
          message: "The sandbox is still transitioning. Try again in a moment.",
          sandboxId: id,
          code: 409,
        });
      }
    });

    test("a paused sandbox without auto-resume is 502; with it, concurrent requests share one resume", async () => {
      catalog.put({ sandboxID: "napping", state: "paused", hostAddress: "127.0.0.1" });
      assert.equal((await send("/echo", { headers: via("napping") })).status, 502);
      assert.equal(catalog.resumeCalls, 0);

      catalog.put({ sandboxID: "dozing", state: "paused", hostAddress: "127.0.0.1", autoResume: true });
      const replies = await Promise.all([1, 2, 3].map(() => send("/echo", { headers: via("dozing") })));
      assert.deepEqual(
        replies.map((r) => r.status),
        [200, 200, 200],
      );
      assert.equal(catalog.resumeCalls, 1);
      assert.equal(catalog.entries.get("dozing")?.state, "running");
    });

    test("auto-resume through envd's port needs the secured sandbox's access token", async () => {
      const paused = {
        sandboxID: "locked",
        state: "paused",
        hostAddress: "127.0.0.2",
        envdAccessToken: "envd-secret",
        autoResume: true,
      } as const;
      catalog.put(paused);
      const denied = await send("/health", { headers: via("locked", ENVD_PORT) });
      assert.equal(denied.status, 403);
      assert.equal(catalog.entries.get("locked")?.state, "paused");
      const allowed = await send("/health", {
        headers: { ...via("locked", ENVD_PORT), "x-access-token": "envd-secret" },
      });
      assert.equal(allowed.status, 200);
      assert.equal(catalog.entries.get("locked")?.state, "running");
    });

    test("requests during a pause wait for its outcome: 502 once paused, resumed with auto-resume, or forwarded", async () => {
      const outcomes: [string, Partial<CatalogEntry>, number][] = [
        ["pausedafter", { state: "paused" }, 502],
        ["resumedafter", { state: "paused", autoResume: true }, 200],
        ["failedpause", { state: "running" }, 200],
        ["killedafter", {}, 502],
      ];
      const resumes = catalog.resumeCalls;
      await Promise.all(
        outcomes.map(async ([id, after, status]) => {
          catalog.put({ sandboxID: id, state: "pausing", hostAddress: "127.0.0.1" });
          const reply = send("/echo", { headers: via(id) });
          await sleep(120);
          if (after.state)
            catalog.put({ sandboxID: id, hostAddress: "127.0.0.1", state: after.state, ...after });
          else catalog.entries.delete(id);
          const answer = await reply;
          assert.equal(answer.status, status, `${id}: ${answer.body}`);
          if (status === 502) assert.equal(json(answer).message, "The sandbox was not found");
        }),
      );
      assert.equal(catalog.resumeCalls, resumes + 1);
      catalog.put({ sandboxID: "resuming", state: "starting", hostAddress: "127.0.0.1" });
      const during = send("/echo", { headers: via("resuming") });
      await sleep(120);
      catalog.put({ sandboxID: "resuming", state: "running", hostAddress: "127.0.0.1" });
      assert.equal((await during).status, 200, "a resume under way is waited for, not a 409");
    });
    test("a request the sandbox drops unanswered as its pause begins is sent again where it is now (no body only)", async () => {
      // 127.0.0.5 drops every connection (a sandbox being frozen); 127.0.0.6 is where it resumes.
      const dropper = net.createServer((socket) => {
        const id = dropping.shift();
        if (id) {
          catalog.put({ sandboxID: id, state: "pausing", hostAddress: "127.0.0.5", autoResume: true });
          setTimeout(() => {
            catalog.put({ sandboxID: id, state: "paused", hostAddress: "127.0.0.6", autoResume: true });
          }, 100);
        }
        socket.destroy();
      });
      const dropping: string[] = [];
      const port = await new Promise<number>((resolve) =>
        dropper.listen(0, "127.0.0.5", () => resolve((dropper.address() as AddressInfo).port)),
      );
      const resumed = http.createServer(sandboxApp);
      await listen(resumed, "127.0.0.6", port);
      // A proxy of its own: its upstream errors stay out of the shared proxy's metrics.
      const own = await startClientProxy({ port: 0, domain: DOMAIN, catalog, logger: createNoopLogger() });
      try {
        for (const [id, method, body, status] of [
          ["dropget", "GET", undefined, 200],
          ["droppost", "POST", "not sent twice", 502],
        ] as const) {
          catalog.put({ sandboxID: id, state: "running", hostAddress: "127.0.0.5", autoResume: true });
          dropping.push(id);
          const reply = await send("/echo", { method, body, headers: via(id, port), port: own.port });
          assert.equal(reply.status, status, `${method}: ${reply.body}`);
          if (status === 502) assert.equal(json(reply).message, "The sandbox is not reachable");
          else assert.equal(json(reply).method, "GET");
        }
        const errors = Object.values(own.metrics().upstreamErrors).reduce((a, b) => a + b, 0);
        assert.equal(errors, 2, "both drops are counted");
      } finally {
        await own.close();
        dropper.close();
        resumed.closeAllConnections();
        await new Promise((r) => resumed.close(r));
      }
    });
    test("a running sandbox that resets a first connection: a GET goes once more on a fresh one, a POST does not", async () => {
      // 127.0.0.8 resets the first connection of each pair and serves the next (a netstack just
      // restored dropping one); the sandbox stays running at that address throughout.
      const app = http.createServer(sandboxApp);
      let connections = 0;
      const flaky = net.createServer((socket) => {
        if (connections++ % 2 === 0) socket.resetAndDestroy();
        else app.emit("connection", socket);
      });
      const port = await new Promise<number>((resolve) =>
        flaky.listen(0, "127.0.0.8", () => resolve((flaky.address() as AddressInfo).port)),
      );
      const own = await startClientProxy({ port: 0, domain: DOMAIN, catalog, logger: createNoopLogger() });
      try {
        catalog.put({ sandboxID: "flakyget", state: "running", hostAddress: "127.0.0.8" });
        const got = await send("/echo", { headers: via("flakyget", port), port: own.port });
        assert.equal(got.status, 200, got.body);
        assert.equal(json(got).method, "GET");
        assert.equal(connections, 2);
        catalog.put({ sandboxID: "flakypost", state: "running", hostAddress: "127.0.0.8" });
        const posted = await send("/echo", {
          method: "POST",
          body: "sent once",
          headers: via("flakypost", port),
          port: own.port,
        });
        assert.equal(posted.status, 502);
        assert.equal(connections, 3);
      } finally {
        await own.close();
        flaky.close();
        app.closeAllConnections();
      }
    });
  });

  describe("signed file URLs on the shared address", () => {
    /** A /files URL as the SDK's downloadUrl/uploadUrl make it, signed with `token`. */
    function signedURL(token: string, operation: "read" | "write", params: Record<string, string> = {}) {
      const path = params.path ?? "/home/user/a.txt";
      const expiration = params.signature_expiration;
      const signature = fileSignature(
        path,
        operation,
        params.username ?? "",
        token,
        expiration === undefined ? undefined : Number(expiration),
      );
      return `/files?${new URLSearchParams({ path, ...params, signature })}`;
    }

    before(() => {
      catalog.put({
        sandboxID: "signera",
        state: "running",
        hostAddress: "127.0.0.2",
        envdAccessToken: "tok-a",
      });
      // Nothing listens on 127.0.0.3: a request routed there is 502 naming the sandbox.
      catalog.put({
        sandboxID: "signerb",
        state: "running",
        hostAddress: "127.0.0.3",
        envdAccessToken: "tok-b",
      });
    });

    test("a signed URL reaches the sandbox whose token signed it, unchanged, with no routing headers", async () => {
      const url = signedURL("tok-a", "read", {
        signature_expiration: String(Math.floor(Date.now() / 1000) + 60),
      });
      const read = await send(url);
      assert.equal(read.status, 200, read.body.toString());
      assert.equal(json(read).url, url, "envd gets the URL as signed, to check it again");
      const write = await send(signedURL("tok-a", "write", { username: "root" }), {
        method: "POST",
        body: "x",
      });
      assert.equal(write.status, 200);
      assert.equal(json(write).method, "POST");
      const other = await send(signedURL("tok-b", "read"));
      assert.equal(other.status, 502);
      assert.equal(json(other).sandboxId, "signerb", "B's signature goes to B only");
    });

    test("unsigned, tampered, expired or misused URLs are 401 and reach no sandbox", async () => {
      const good = new URL(signedURL("tok-a", "read"), "http://x");
      const variants: [string, string, RegExp][] = [
        ["GET", "/files?path=%2Fhome%2Fuser%2Fa.txt", /missing signature/],
        ["GET", good.href.replace("a.txt", "b.txt").slice("http://x".length), /invalid signature/],
        ["GET", `${good.pathname}${good.search}&username=root`, /invalid signature/],
        [
          "GET",
          `${good.pathname}${good.search.replace("signature=v1_", "signature=v1_A")}`,
          /invalid signature/,
        ],
        ["POST", `${good.pathname}${good.search}`, /invalid signature/],
        ["GET", signedURL("tok-a", "read", { signature_expiration: "1000" }), /expired/],
        ["GET", `${good.pathname}${good.search}&signature_expiration=soon`, /invalid signature_expiration/],
        ["GET", signedURL("not-a-sandbox-token", "read"), /invalid signature/],
      ];
      for (const [method, url, message] of variants) {
        const reply = await send(url, { method, body: method === "POST" ? "x" : undefined });
        assert.equal(reply.status, 401, `${method} ${url}: ${reply.body}`);
        assert.equal(json(reply).code, 401);
        assert.match(json(reply).message, message, url);
      }
    });

    test("only exactly /files with GET, HEAD or POST is routed by signature", async () => {
      const query = new URL(signedURL("tok-a", "read"), "http://x").search;
      for (const [method, path] of [
        ["GET", `/files/${query}`],
        ["GET", `//files${query}`],
        ["GET", `/envs${query}`],
        ["GET", `/init${query}`],
        ["PUT", `/files${query}`],
        ["DELETE", `/files${query}`],
      ] as const) {
        const reply = await send(path, { method });
        assert.equal(reply.status, 400, `${method} ${path}`);
        assert.match(json(reply).message, /names no sandbox/);
      }
    });

    test("a valid signature resumes a paused sandbox with auto-resume; an expired one does not", async () => {
      catalog.put({
        sandboxID: "signedpaused",
        state: "paused",
        hostAddress: "127.0.0.2",
        envdAccessToken: "tok-p",
        autoResume: true,
      });
      const calls = catalog.resumeCalls;
      const expired = await send(signedURL("tok-p", "read", { signature_expiration: "1000" }));
      assert.equal(expired.status, 401);
      assert.equal(catalog.resumeCalls, calls);
      assert.equal(catalog.entries.get("signedpaused")?.state, "paused");
      const valid = await send(signedURL("tok-p", "read"));
      assert.equal(valid.status, 200);
      assert.equal(catalog.entries.get("signedpaused")?.state, "running");
    });
  });

  describe("guards", () => {
    test("envd's internal paths are 404 and never reach envd", async () => {
      for (const path of [
        "/init",
        "/freeze",
        "/unfreeze",
        "/fsfreeze",
        "/fsthaw",
        "/collapse",
        "/upgrade",
        "/INIT/",
        "//init",
      ]) {
        const reply = await send(path, { method: "POST", headers: via("envd", ENVD_PORT), body: "{}" });
        assert.equal(reply.status, 404, path);
        const body = json(reply);
        assert.equal(body.code, 404);
        assert.match(body.message, /^This endpoint is reserved/);
        assert.equal(typeof body.path, "string");
      }
      // The same paths on other ports belong to the user's app.
      assert.equal((await send("/init", { headers: via("web") })).status, 200);
    });

    test("a traffic token guards non-envd ports: missing, invalid, valid", async () => {
      const missing = await send("/echo", { headers: via("secured") });
      assert.equal(missing.status, 403);
      assert.deepEqual(json(missing), {
        sandboxId: "secured",
        message:
          "Sandbox is secured with traffic access token. Token header 'e2b-traffic-access-token' is missing",
        code: 403,
      });
      const invalid = await send("/echo", {
        headers: { ...via("secured"), "e2b-traffic-access-token": "nope" },
      });
      assert.equal(invalid.status, 403);
      assert.equal(
        json(invalid).message,
        "Sandbox is secured with traffic access token. Provided token in header 'e2b-traffic-access-token' is invalid",
      );
      const valid = await send("/echo", {
        headers: { ...via("secured"), "e2b-traffic-access-token": "traffic-secret" },
      });
      assert.equal(valid.status, 200);
      assert.equal(json(valid).headers["e2b-traffic-access-token"], undefined, "the token is not passed on");
    });

    test("envd's port is exempt from the traffic token (envd checks X-Access-Token)", async () => {
      const reply = await send("/health", {
        headers: { ...via("envd", ENVD_PORT), "x-access-token": "envd-secret" },
      });
      assert.equal(reply.status, 200);
      assert.equal(json(reply).headers["x-access-token"], "envd-secret");
      assert.equal(json(reply).headers.host, `127.0.0.2:${ENVD_PORT}`);
    });

    test("a closed port is 502 port-not-open", async () => {
      const closed = await freePort();
      const reply = await send("/", { headers: via("web", closed) });
      assert.equal(reply.status, 502);
      assert.deepEqual(json(reply), {
        sandboxId: "web",
        message: "The sandbox is running but port is not open",
        port: closed,
        code: 502,
      });
    });
  });

  describe("streaming", () => {
    test("a streamed response reaches the client chunk by chunk, before it ends", async () => {
      seen.streamGate = deferred();
      const req = open("/stream", { headers: via("web") });
      req.end();
      const [res] = (await once(req, "response")) as [http.IncomingMessage];
      assert.equal(res.headers["content-type"], "application/x-ndjson");
      const [first] = (await within(once(res, "data"), 5_000, "the first chunk")) as [Buffer];
      assert.equal(first.toString(), '{"n":1}\n');
      assert.ok(!res.complete, "the response is still open");
      seen.streamGate.resolve();
      const rest: Buffer[] = [];
      for await (const chunk of res) rest.push(chunk as Buffer);
      assert.equal(Buffer.concat(rest).toString(), '{"n":2}\n');
    });

    test("a 10 MB upload streams through intact (chunked and with Content-Length)", async () => {
      const data = randomBytes(10 * 1024 * 1024);
      const digest = createHash("sha256").update(data).digest("hex");
      const withLength = await send("/upload", {
        method: "POST",
        headers: { ...via("web"), "content-type": "application/octet-stream" },
        body: data,
      });
      assert.equal(json(withLength).length, data.length);
      assert.equal(json(withLength).sha256, digest);

      const req = open("/upload", {
        method: "POST",
        headers: { ...via("web"), "transfer-encoding": "chunked" },
      });
      for (let offset = 0; offset < data.length; offset += 256 * 1024) {
        if (!req.write(data.subarray(offset, offset + 256 * 1024))) await once(req, "drain");
      }
      req.end();
      const [res] = (await once(req, "response")) as [http.IncomingMessage];
      const chunks: Buffer[] = [];
      for await (const chunk of res) chunks.push(chunk as Buffer);
      const echo = JSON.parse(Buffer.concat(chunks).toString());
      assert.equal(echo.length, data.length);
      assert.equal(echo.sha256, digest);
      assert.equal(echo.headers["transfer-encoding"], "chunked");
    });

    test("request bodies are not buffered: the sandbox sees the first chunk before the client sends the rest", async () => {
      seen.firstUploadChunk = deferred();
      const req = open("/upload-probe", {
        method: "POST",
        headers: { ...via("web"), "transfer-encoding": "chunked" },
      });
      req.write(Buffer.alloc(1024, 1));
      await within(seen.firstUploadChunk.promise, 5_000, "the sandbox to see the first chunk");
      req.end(Buffer.alloc(1024, 2));
      const [res] = (await once(req, "response")) as [http.IncomingMessage];
      res.resume();
      assert.equal(res.statusCode, 200);
    });

    test("a 10 MB download streams through intact", async () => {
      const bytes = 10 * 1024 * 1024;
      const reply = await send(`/download?bytes=${bytes}`, { headers: via("web") });
      assert.equal(reply.status, 200);
      assert.equal(reply.headers["content-length"], String(bytes));
      assert.equal(reply.body.length, bytes);
    });

    test("a client that goes away closes the sandbox's side", async () => {
      seen.hangClosed = deferred();
      const req = open("/hang", { headers: via("web") });
      req.end();
      const [res] = (await once(req, "response")) as [http.IncomingMessage];
      await once(res, "data");
      req.destroy();
      await within(seen.hangClosed.promise, 5_000, "the sandbox's response to close");

      seen.firstUploadChunk = deferred();
      seen.uploadAborted = deferred();
      const upload = open("/upload-probe", {
        method: "POST",
        headers: { ...via("web"), "transfer-encoding": "chunked" },
      });
      upload.on("error", () => undefined);
      upload.write(Buffer.alloc(1024));
      await within(seen.firstUploadChunk.promise, 5_000, "the first upload chunk");
      upload.destroy();
      await within(seen.uploadAborted.promise, 5_000, "the sandbox to see the upload aborted");
    });

    test("a sandbox that resets mid-response truncates the client's response (no clean end)", async () => {
      const aborts = proxy.metrics().clientAborts;
      const req = open("/reset", { headers: via("web") });
      req.end();
      const [res] = (await once(req, "response")) as [http.IncomingMessage];
      const received: Buffer[] = [];
      const ended = await new Promise<string>((resolve) => {
        res.on("data", (chunk: Buffer) => received.push(chunk));
        res.on("end", () => resolve("end"));
        res.on("error", () => resolve("error"));
        res.on("aborted", () => resolve("aborted"));
        req.on("error", () => resolve("error"));
      });
      assert.notEqual(ended, "end");
      assert.equal(Buffer.concat(received).toString(), "partial");
      assert.ok(!res.complete);
      await sleep(20);
      assert.equal(proxy.metrics().upstreamErrors.ECONNRESET, 1, "counted as the sandbox's failure");
      assert.equal(proxy.metrics().clientAborts, aborts, "not as the client's");
    });

    test("upstream connections are kept alive and reused", async () => {
      await send("/echo", { headers: via("web") });
      const before = seen.connections;
      for (let i = 0; i < 5; i++) assert.equal((await send("/echo", { headers: via("web") })).status, 200);
      assert.ok(
        seen.connections - before <= 1,
        `${seen.connections - before} new upstream connections for 5 requests`,
      );
    });
  });

  describe("upgrades", () => {
    test("a WebSocket echoes through the proxy, by headers and by host", async () => {
      for (const headers of [via("web"), { host: `${userPort}-web.${DOMAIN}` }]) {
        const ws = new WebSocket(`ws://127.0.0.1:${proxy.port}/ws`, { headers });
        await within(once(ws, "open"), 5_000, "the WebSocket to open");
        assert.equal(seen.wsHost, `127.0.0.1:${userPort}`);
        ws.send("hello");
        const [text] = (await once(ws, "message")) as [Buffer];
        assert.equal(text.toString(), "echo:hello");
        const payload = randomBytes(256 * 1024);
        ws.send(payload);
        const [binary] = (await once(ws, "message")) as [Buffer];
        assert.ok(Buffer.compare(binary, payload) === 0);
        ws.close();
        await once(ws, "close");
      }
    });

    test("upgrades are refused like requests: unknown sandbox, closed port, declined upgrade", async () => {
      const status = async (headers: Record<string, string>, path = "/ws") => {
        const ws = new WebSocket(`ws://127.0.0.1:${proxy.port}${path}`, { headers });
        ws.on("error", () => undefined);
        const [, res] = (await within(once(ws, "unexpected-response"), 5_000, "a refusal")) as [
          unknown,
          http.IncomingMessage,
        ];
        const chunks: Buffer[] = [];
        for await (const chunk of res) chunks.push(chunk as Buffer);
        ws.terminate();
        return { status: res.statusCode, body: Buffer.concat(chunks).toString() };
      };
      const unknown = await status(via("nosuchsandbox"));
      assert.equal(unknown.status, 502);
      assert.equal(JSON.parse(unknown.body).message, "The sandbox was not found");
      const closed = await status(via("web", await freePort()));
      assert.equal(closed.status, 502);
      assert.equal(JSON.parse(closed.body).message, "The sandbox is running but port is not open");
      assert.equal((await status(via("secured"))).status, 403);
      // The sandbox's server answers a non-WebSocket path with a plain response.
      const declined = await status(via("envd", ENVD_PORT), "/health");
      assert.equal(declined.status, 200);
    });

    test("an upgrade with a body is 400 at once (a sandbox server answering it as a request waited for the body)", async () => {
      for (const framing of ["content-length: 1", "transfer-encoding: chunked"]) {
        const socket = net.connect(proxy.port, "127.0.0.1");
        await once(socket, "connect");
        socket.write(
          `POST /process.Process/List HTTP/1.1\r\nHost: 49983-envd.${DOMAIN}\r\nConnection: Upgrade\r\n` +
            `Upgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n` +
            `${framing}\r\n\r\n${framing.startsWith("content") ? "\0" : "1\r\n\0\r\n0\r\n\r\n"}`,
        );
        let answer = "";
        socket.on("data", (chunk: Buffer) => {
          answer += chunk.toString();
        });
        await within(once(socket, "close"), 3_000, `an answer (${framing})`);
        assert.match(answer, /^HTTP\/1\.1 400 /, framing);
        assert.match(answer, /cannot carry a body/);
      }
    });
  });

  describe("limits and lifecycle", () => {
    test("a per-sandbox connection cap answers 429; close() cuts open tunnels", async () => {
      const capped = await startClientProxy({
        port: 0,
        domain: DOMAIN,
        catalog,
        logger: createNoopLogger(),
        maxConnectionsPerSandbox: 1,
      });
      try {
        seen.hangClosed = deferred();
        const held = open("/hang", { headers: via("web"), port: capped.port });
        held.on("error", () => undefined);
        held.end();
        const [res] = (await once(held, "response")) as [http.IncomingMessage];
        await once(res, "data");
        const refused = await send("/echo", { headers: via("web"), port: capped.port });
        assert.equal(refused.status, 429);
        assert.equal(json(refused).code, 429);
        assert.equal(refused.headers.connection, "close", "a refused client keeps no idle connection");
        assert.equal(json(refused).sandboxId, "web");
        // Other sandboxes have their own budget.
        assert.equal(
          (await send("/health", { headers: via("envd", ENVD_PORT), port: capped.port })).status,
          200,
        );
        held.destroy();
        await seen.hangClosed.promise;
        await sleep(20);
        assert.equal((await send("/echo", { headers: via("web"), port: capped.port })).status, 200);

        const ws = new WebSocket(`ws://127.0.0.1:${capped.port}/ws`, { headers: via("web") });
        await once(ws, "open");
        assert.equal(capped.metrics().activeConnections, 1);
        const closed = once(ws, "close");
        await within(capped.close(), 5_000, "close() with an open tunnel");
        await within(closed, 5_000, "the tunnel to be cut");
      } finally {
        await capped.close();
      }
    });

    test("a flood of client connections stops at the cap; idle ones make room for new ones", async () => {
      const capped = await startClientProxy({
        port: 0,
        domain: DOMAIN,
        catalog,
        logger: createNoopLogger(),
        maxConnections: 20,
      });
      const flood: Socket[] = [];
      try {
        // Silent connections, as a flood opens them: none may hold the proxy beyond its cap.
        for (let i = 0; i < 60; i++) {
          const socket = net.connect(capped.port, "127.0.0.1");
          socket.on("error", () => undefined);
          flood.push(socket);
        }
        await Promise.all(flood.map((s) => once(s, "connect").catch(() => undefined)));
        // The kernel completes every handshake; the proxy closes the ones past the cap as it takes
        // them, which a loaded machine may take a while to get to.
        const held = () => flood.filter((s) => !s.destroyed && s.readyState === "open").length;
        for (let i = 0; i < 100 && (held() > 20 || capped.metrics().droppedConnections < 40); i++)
          await sleep(50);
        assert.ok(held() <= 20, `${held()} silent connections held`);
        assert.ok(capped.metrics().droppedConnections >= 40);
        // The idle ones were shed: a client with something to ask gets through.
        let status = 0;
        for (let i = 0; i < 20 && status !== 200; i++) {
          status = await send("/echo", { headers: via("web"), port: capped.port }).then(
            (r) => r.status,
            () => 0,
          );
          if (status !== 200) await sleep(100);
        }
        assert.equal(status, 200);
      } finally {
        for (const socket of flood) socket.destroy();
        await capped.close();
      }
    });

    test("one client address cannot fill the proxy: another client gets in at once", async () => {
      const capped = await startClientProxy({
        port: 0,
        domain: DOMAIN,
        catalog,
        logger: createNoopLogger(),
        maxConnections: 20,
      });
      const flood: Socket[] = [];
      try {
        // 127.0.0.2 is another client on the loopback, opening silent connections far past the cap.
        for (let i = 0; i < 60; i++) {
          const socket = net.connect({ port: capped.port, host: "127.0.0.1", localAddress: "127.0.0.2" });
          socket.on("error", () => undefined);
          flood.push(socket);
        }
        await Promise.all(flood.map((s) => once(s, "connect").catch(() => undefined)));
        // The kernel completes every handshake; the proxy closes the ones past the cap as it takes them.
        const held = () => flood.filter((s) => !s.destroyed && s.readyState === "open").length;
        for (let i = 0; i < 100 && held() > 10; i++) await sleep(50);
        assert.ok(held() <= 10, `${held()} connections of one client held (its cap is half of 20)`);
        // No connection of the other client was ever shed or closed to make room: it gets in.
        const reply = await send("/echo", { headers: via("web"), port: capped.port });
        assert.equal(reply.status, 200);
      } finally {
        for (const socket of flood) socket.destroy();
        await capped.close();
      }
    });

    test("a port that never completes the handshake is 502 after the connect timeout", async () => {
      // A listener with a full accept queue drops SYNs: the loopback stand-in for a released address.
      const listener = spawn(
        "python3",
        [
          "-c",
          "import socket,time\ns=socket.socket()\ns.bind(('127.0.0.1',0))\ns.listen(0)\nprint(s.getsockname()[1],flush=True)\ntime.sleep(60)",
        ],
        { stdio: ["ignore", "pipe", "inherit"] },
      );
      const impatient = await startClientProxy({
        port: 0,
        domain: DOMAIN,
        catalog,
        logger: createNoopLogger(),
        connectTimeoutMs: 300,
      });
      const filler = new net.Socket();
      try {
        const [line] = (await once(listener.stdout!, "data")) as [Buffer];
        const port = Number(line.toString().trim());
        filler.connect(port, "127.0.0.1");
        await once(filler, "connect");
        const started = Date.now();
        const reply = await send("/", { headers: via("web", port), port: impatient.port });
        assert.equal(reply.status, 502);
        assert.deepEqual(json(reply), {
          sandboxId: "web",
          message: "The sandbox is not reachable",
          port,
          code: 502,
        });
        assert.ok(Date.now() - started < 5_000);
        assert.equal(impatient.metrics().upstreamErrors.ETIMEDOUT, 1);
      } finally {
        filler.destroy();
        listener.kill();
        await impatient.close();
      }
    });

    test("a sandbox that leaves the catalog takes its pooled connections with it", async () => {
      const sockets = new Map<number, Socket>();
      const track = (socket: Socket) => sockets.set(socket.remotePort ?? 0, socket);
      userServer.on("connection", track);
      try {
        catalog.put({ sandboxID: "fleeting", state: "running", hostAddress: "127.0.0.1" });
        const reply = await send("/echo", { headers: via("fleeting") });
        const upstreamSocket = sockets.get(json(reply).remotePort);
        assert.ok(upstreamSocket && !upstreamSocket.destroyed, "a pooled connection to the sandbox");
        const closed = once(upstreamSocket, "close");
        catalog.entries.delete("fleeting");
        assert.equal((await send("/echo", { headers: via("fleeting") })).status, 502);
        await within(closed, 5_000, "the pooled connection to close");
      } finally {
        userServer.off("connection", track);
      }
    });

    test("metrics count requests by status", async () => {
      const metrics = proxy.metrics();
      assert.ok((metrics.requestsByStatus["200"] ?? 0) > 5);
      assert.ok((metrics.requestsByStatus["502"] ?? 0) >= 2);
      assert.ok((metrics.requestsByStatus["404"] ?? 0) >= 9);
      assert.ok(metrics.tunnelsTotal >= 2);
      assert.ok((metrics.upstreamErrors.ECONNREFUSED ?? 0) >= 1);
      assert.ok(metrics.clientAborts >= 2);
      // Served in Prometheus's text format, with the same numbers.
      const served = await send("/metrics", { headers: { authorization: `Bearer ${METRICS_TOKEN}` } });
      assert.equal(served.status, 200);
      assert.match(String(served.headers["content-type"]), /^text\/plain; version=0\.0\.4/);
      const text = served.body.toString();
      const tunnels = /^moat_proxy_tunnels_total (\d+)$/m.exec(text);
      assert.equal(Number(tunnels?.[1]), proxy.metrics().tunnelsTotal, text);
      assert.match(text, /^moat_proxy_requests_total\{status="502"\} \d+$/m);
      assert.match(text, /^moat_proxy_upstream_errors_total\{code="ECONNREFUSED"\} \d+$/m);
      assert.match(text, /^moat_proxy_active_connections \d+$/m);
    });

    test("the proxy's own /metrics needs the metrics token; nobody else reads every tenant's traffic", async () => {
      for (const headers of [{}, { authorization: "Bearer wrong" }, { authorization: METRICS_TOKEN }]) {
        const reply = await send("/metrics", { headers });
        assert.equal(reply.status, 401, JSON.stringify(headers));
        const body = json(reply);
        assert.equal(body.code, 401);
        assert.match(String(body.message), /Bearer/);
        assert.equal(body.requestsTotal, undefined);
      }
      const off = await startClientProxy({
        port: 0,
        host: "127.0.0.1",
        domain: DOMAIN,
        catalog,
        logger: createNoopLogger(),
      });
      try {
        const reply = await send("/metrics", { port: off.port, headers: { authorization: "Bearer x" } });
        assert.equal(reply.status, 401, "no token configured: /metrics is off");
        assert.match(reply.body.toString(), /metrics token/);
      } finally {
        await off.close();
      }
    });
  });
});

describe("UpstreamPool", () => {
  test("one pool per sandbox and address; empty pools are swept", () => {
    const pool = new UpstreamPool();
    try {
      const a = pool.agentFor("abc", "10.11.0.2");
      assert.equal(pool.agentFor("abc", "10.11.0.2"), a);
      const moved = pool.agentFor("abc", "10.11.0.9");
      assert.notEqual(moved, a, "a new address gets a new pool");
      assert.notEqual(pool.agentFor("def", "10.11.0.3"), moved);
      assert.equal(pool.size, 2);
      pool.forget("def");
      assert.equal(pool.size, 1);
      pool.sweep();
      assert.equal(pool.size, 0, "pools without connections are dropped");
    } finally {
      pool.close();
    }
  });
});
