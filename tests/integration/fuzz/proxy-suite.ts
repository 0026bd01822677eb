/**
 * Fuzzing the client proxy of `moat up`: random and malformed routing headers (E2b-Sandbox-Id,
 * E2b-Sandbox-Port), Host names, traffic and access tokens, methods, paths (envd's reserved ones
 * in every spelling) and upgrades, aimed at a running secured sandbox, a paused one that may
 * auto-resume, a killed one and ids that never existed; then raw bytes on a socket (malformed
 * HTTP). The proxy must not crash or hang, answer no 5xx but the documented 502s (unknown or
 * stopped sandbox, closed port, unreachable sandbox), and answer every error with a JSON body
 * `{code, message, …}` (code = status; HTML only for a client that asks for it).
 */
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import fc from "fast-check";
import { type RawAnswer, send } from "../../../packages/api/test/fuzz/http.js";
import { fuzz, runs } from "../../../packages/api/test/fuzz/run.js";
import {
  exchangeRaw,
  type ProxyTargets,
  proxyAnswerProblems,
  proxyRequests,
  rawAnswerProblems,
  rawHTTP,
} from "../../../packages/client-proxy/test/fuzz-requests.js";
import type { RunningMoat } from "../helpers/moat-up.js";

const DEADLINE_MS = 30_000;
const ENVD_PORT = "49983";

/** Defines the suite; `up` answers the `moat up` the entry file started. */
export function proxyFuzzSuite(up: () => RunningMoat): void {
  describe("client proxy fuzzing against moat up", () => {
    let moat: RunningMoat;
    let proxyPort: number;
    let domain: string;
    const ids: Record<"running" | "paused" | "killed", string> = { running: "", paused: "", killed: "" };
    const tokens: Record<"access" | "traffic" | "pausedAccess", string> = {
      access: "",
      traffic: "",
      pausedAccess: "",
    };

    const api = async (method: string, path: string, body?: unknown) => {
      const res = await fetch(`${moat.env.E2B_API_URL}${path}`, {
        method,
        headers: { "X-API-Key": moat.env.E2B_API_KEY!, "Content-Type": "application/json" },
        body: body === undefined ? undefined : JSON.stringify(body),
      });
      const text = await res.text();
      return { status: res.status, json: text ? (JSON.parse(text) as Record<string, string>) : {} };
    };

    /** The proxy answers its own /health and routes to the running sandbox's envd. */
    async function healthy(): Promise<string[]> {
      const own = await send(
        proxyPort,
        { method: "GET", target: "/health", headers: { Host: "localhost" } },
        DEADLINE_MS,
      );
      const envd = await send(
        proxyPort,
        {
          method: "GET",
          target: "/health",
          headers: { "E2b-Sandbox-Id": ids.running, "E2b-Sandbox-Port": ENVD_PORT },
        },
        DEADLINE_MS,
      );
      const problems: string[] = [];
      if (own.status !== 200) problems.push(`the proxy's /health answered ${own.status}`);
      if (envd.status !== 204)
        problems.push(`envd's /health through the proxy answered ${envd.status}: ${envd.text}`);
      if (moat.child.exitCode !== null) problems.push(`moat exited with ${moat.child.exitCode}`);
      return problems;
    }

    before(async () => {
      moat = up();
      proxyPort = Number(new URL(moat.env.E2B_SANDBOX_URL!).port);
      domain = moat.env.E2B_DOMAIN!;
      const running = await api("POST", "/v2/sandboxes", {
        templateID: "base",
        timeout: 600,
        network: { allowPublicTraffic: false },
      });
      assert.equal(running.status, 201, JSON.stringify(running.json));
      ids.running = running.json.sandboxID!;
      tokens.access = running.json.envdAccessToken!;
      tokens.traffic = running.json.trafficAccessToken!;
      assert.ok(tokens.access && tokens.traffic, "a secured sandbox with a traffic token");
      const paused = await api("POST", "/v2/sandboxes", {
        templateID: "base",
        timeout: 600,
        autoPause: true,
        autoResume: { enabled: true },
      });
      assert.equal(paused.status, 201, JSON.stringify(paused.json));
      ids.paused = paused.json.sandboxID!;
      tokens.pausedAccess = paused.json.envdAccessToken!;
      assert.equal((await api("POST", `/sandboxes/${ids.paused}/pause`, {})).status, 204);
      const killed = await api("POST", "/v2/sandboxes", { templateID: "base", timeout: 600 });
      ids.killed = killed.json.sandboxID!;
      assert.equal((await api("DELETE", `/sandboxes/${ids.killed}`)).status, 204);
    });

    after(async () => {
      for (const id of [ids.running, ids.paused]) await api("DELETE", `/sandboxes/${id}`);
    });

    const targets = (): ProxyTargets => ({
      domain,
      proxyPort,
      envdPort: ENVD_PORT,
      sandboxIDs: [ids.running, ids.running, ids.paused, ids.killed],
      ports: ["1", "8080", "65535"],
      accessTokens: [tokens.access, tokens.pausedAccess],
      trafficTokens: [tokens.traffic],
    });

    test("routing headers, hosts, tokens, paths and upgrades", async () => {
      await fuzz(
        "proxy routing",
        fc.asyncProperty(proxyRequests(targets()), async (req) => {
          let answer: RawAnswer;
          try {
            answer = await send(proxyPort, req, DEADLINE_MS);
          } catch (err) {
            // A CONNECT or an upgrade may end in a closed socket: fine if the proxy is still there
            // (checked below). A hang is never fine.
            if (/^hang/.test((err as Error).message)) throw err;
            if (req.method !== "CONNECT" && !req.headers.Upgrade) throw err;
            answer = { status: 0, headers: new Headers(), body: Buffer.alloc(0), text: "", cut: false };
          }
          const problems = [...proxyAnswerProblems(answer, req), ...(await healthy())];
          assert.deepEqual(
            problems,
            [],
            `${req.method} ${req.target.slice(0, 200)} ${req.how} → ${answer.status} ${answer.text.slice(0, 300)}`,
          );
        }),
        { numRuns: runs(1.5) },
      );
    });

    test("malformed HTTP on a raw socket: an answer or a close, never a hang or a crash", async () => {
      await fuzz(
        "proxy raw HTTP",
        fc.asyncProperty(rawHTTP(targets()), async (bytes) => {
          const reply = await exchangeRaw(proxyPort, bytes);
          const problems = [...rawAnswerProblems(reply), ...(await healthy())];
          assert.deepEqual(
            problems,
            [],
            `${JSON.stringify(bytes.slice(0, 300))} → ${JSON.stringify(reply.slice(0, 300))}`,
          );
        }),
        { numRuns: runs(0.5) },
      );
    });

    test("the proxy logged no escaped error", () => {
      assert.doesNotMatch(moat.log(), /unhandled error in the client proxy|client proxy server error/);
    });
  });
}
