/**
 * Fuzzing the client proxy in-process: a memory catalog (running sandboxes with and without
 * tokens, paused ones that may or may not auto-resume, one starting) in front of a loopback
 * server playing a sandbox's port, and a closed port. Random and malformed routing headers, Host
 * names, tokens, paths and upgrades, then raw malformed HTTP: no crash, no hang, no 5xx but the
 * documented 502s, every error JSON `{code, message, …}` with code = status.
 * (tests/integration/fuzz/proxy.test.ts does the same against `moat up`, envd's port included.)
 */
import assert from "node:assert/strict";
import http from "node:http";
import type { AddressInfo, Socket } from "node:net";
import { after, before, describe, test } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { type CatalogEntry, createNoopLogger, type SandboxCatalog } from "@moat/shared";
import fc from "fast-check";
import { type RawAnswer, send } from "../../api/test/fuzz/http.js";
import { fuzz, runs, watchCrashes } from "../../api/test/fuzz/run.js";
import { type ClientProxy, startClientProxy } from "../src/index.js";
import {
  exchangeRaw,
  type ProxyTargets,
  proxyAnswerProblems,
  proxyRequests,
  rawAnswerProblems,
  rawHTTP,
} from "./fuzz-requests.js";

const DOMAIN = "moat.local";
const DEADLINE_MS = 10_000;
const UPSTREAM_MARK = "x-fuzz-upstream";

class MemoryCatalog implements SandboxCatalog {
  readonly entries = new Map<string, CatalogEntry>();

  async lookup(sandboxID: string): Promise<CatalogEntry | undefined> {
    return this.entries.get(sandboxID);
  }

  async resume(sandboxID: string): Promise<CatalogEntry | undefined> {
    await sleep(5);
    const entry = this.entries.get(sandboxID);
    return entry && { ...entry, state: "running", hostAddress: "127.0.0.1" };
  }
}

describe("client proxy fuzzing, in-process", () => {
  const catalog = new MemoryCatalog();
  const crashes = watchCrashes();
  let proxy: ClientProxy;
  let targets: ProxyTargets;
  // A sandbox's port: answers every request, and switches protocols for upgrades. Its answers
  // carry UPSTREAM_MARK, so that the checks tell them from the proxy's own.
  const upstream = http.createServer((req, res) => {
    req.resume();
    req.on("end", () =>
      res.writeHead(200, { "content-type": "text/plain", [UPSTREAM_MARK]: "1" }).end("upstream"),
    );
  });
  upstream.on("upgrade", (_req, socket: Socket) => {
    socket.end(
      `HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n${UPSTREAM_MARK}: 1\r\n\r\n`,
    );
  });
  upstream.on("clientError", (_err, socket: Socket) => {
    socket.end(
      `HTTP/1.1 400 Bad Request\r\n${UPSTREAM_MARK}: 1\r\nconnection: close\r\ncontent-length: 0\r\n\r\n`,
    );
  });

  async function healthy(): Promise<string[]> {
    const own = await send(
      proxy.port,
      { method: "GET", target: "/health", headers: { Host: "localhost" } },
      DEADLINE_MS,
    );
    return own.status === 200 ? [] : [`the proxy's /health answered ${own.status}`];
  }

  before(async () => {
    await new Promise<void>((resolve) => upstream.listen(0, "127.0.0.1", resolve));
    const open = String((upstream.address() as AddressInfo).port);
    const closedServer = http.createServer();
    await new Promise<void>((resolve) => closedServer.listen(0, "127.0.0.1", resolve));
    const closed = String((closedServer.address() as AddressInfo).port);
    await new Promise((resolve) => closedServer.close(resolve));
    const running = (sandboxID: string, extra: Partial<CatalogEntry> = {}): CatalogEntry => ({
      sandboxID,
      state: "running",
      hostAddress: "127.0.0.1",
      autoResume: false,
      ...extra,
    });
    for (const entry of [
      running("run1", { envdAccessToken: "access-run1", trafficAccessToken: "traffic-run1" }),
      running("open1"),
      running("paused1", {
        state: "paused",
        hostAddress: "",
        autoResume: true,
        envdAccessToken: "access-paused1",
      }),
      running("paused2", { state: "paused", hostAddress: "" }),
      running("starting1", { state: "starting" }),
    ]) {
      catalog.entries.set(entry.sandboxID, entry);
    }
    proxy = await startClientProxy({
      port: 0,
      host: "127.0.0.1",
      domain: DOMAIN,
      catalog,
      logger: createNoopLogger(),
      // starting1 never starts: its requests wait this long, then get 409.
      transitionWaitMs: 200,
    });
    targets = {
      domain: DOMAIN,
      proxyPort: proxy.port,
      sandboxIDs: ["run1", "open1", "paused1", "paused2", "starting1"],
      ports: [open, closed],
      accessTokens: ["access-run1", "access-paused1"],
      trafficTokens: ["traffic-run1"],
    };
  });

  after(async () => {
    crashes.stop();
    await proxy?.close();
    // Not awaited: Node may never report the close of a server whose sockets went to upgrades.
    upstream.close();
    upstream.closeAllConnections();
  });

  test("routing headers, hosts, tokens, paths and upgrades", async () => {
    await fuzz(
      "in-process proxy routing",
      fc.asyncProperty(proxyRequests(targets), async (req) => {
        let answer: RawAnswer;
        try {
          answer = await send(proxy.port, req, DEADLINE_MS);
        } catch (err) {
          // A CONNECT may end in a closed socket (nothing serves it): fine if the proxy still answers.
          if (/^hang/.test((err as Error).message) || req.method !== "CONNECT") throw err;
          answer = { status: 0, headers: new Headers(), body: Buffer.alloc(0), text: "", cut: false };
        }
        const fromUpstream = (a: RawAnswer) => a.headers.has(UPSTREAM_MARK);
        const problems = [
          ...proxyAnswerProblems(answer, req, { fromUpstream }),
          ...(await healthy()),
          ...crashes.take(),
        ];
        assert.deepEqual(
          problems,
          [],
          `${req.method} ${req.target.slice(0, 200)} ${req.how} → ${answer.status} ${answer.text.slice(0, 300)}`,
        );
      }),
      { numRuns: runs(3) },
    );
  });

  test("malformed HTTP on a raw socket: a JSON error or a close, never a hang or a crash", async () => {
    await fuzz(
      "in-process proxy raw HTTP",
      fc.asyncProperty(rawHTTP(targets), async (bytes) => {
        const reply = await exchangeRaw(proxy.port, bytes, 500);
        const problems = [...rawAnswerProblems(reply), ...(await healthy()), ...crashes.take()];
        assert.deepEqual(
          problems,
          [],
          `${JSON.stringify(bytes.slice(0, 300))} → ${JSON.stringify(reply.slice(0, 300))}`,
        );
      }),
      { numRuns: runs(1) },
    );
  });
});
