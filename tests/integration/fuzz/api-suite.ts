/**
 * A bounded pass of the API fuzzer (packages/api/test/fuzz.test.ts does the bulk in-process)
 * against a real `moat up`: real HTTP, the real orchestrator and gVisor behind the API. Requests
 * come from the API's own /openapi.json; every answer within the deadline, no 5xx but those the
 * operation documents (never 500), errors `{code, message}` with code = status, and the API (and
 * the moat process) still up afterwards.
 *
 * Template build starts are left out here: a valid one pulls an image from a public registry or
 * runs steps that may reach the internet, and tests reach only loopback. The in-process fuzzing
 * covers that route against the fake node.
 */
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import fc from "fast-check";
import { apiAnswerProblems } from "../../../packages/api/test/fuzz/check.js";
import { send } from "../../../packages/api/test/fuzz/http.js";
import {
  type OpenAPIDocument,
  type Operation,
  operationsOf,
  type RequestContext,
  requestsFor,
  strayRequests,
} from "../../../packages/api/test/fuzz/openapi.js";
import { fuzz, runs } from "../../../packages/api/test/fuzz/run.js";
import {
  exchangeRaw,
  rawAnswerProblems,
  rawHTTP,
} from "../../../packages/client-proxy/test/fuzz-requests.js";
import type { RunningMoat } from "../helpers/moat-up.js";

/** Creates, pauses and resumes of real sandboxes take seconds; one taking this long is hung. */
const DEADLINE_MS = 60_000;

/** Defines the suite; `up` answers the `moat up` the entry file started. */
export function apiFuzzSuite(up: () => RunningMoat): void {
  describe("API fuzzing against moat up", () => {
    let moat: RunningMoat;
    let apiPort: number;
    let operations: Operation[];
    let ctx: RequestContext;
    /** Sandboxes of the other suites, which this one leaves alone. */
    const existing = new Set<string>();

    const api = (method: string, target: string, body?: unknown) =>
      send(
        apiPort,
        {
          method,
          target,
          headers: { "X-API-Key": moat.env.E2B_API_KEY!, "Content-Type": "application/json" },
          body: body === undefined ? undefined : JSON.stringify(body),
        },
        DEADLINE_MS,
      );

    before(async () => {
      moat = up();
      apiPort = Number(new URL(moat.env.E2B_API_URL!).port);
      const listed = await api("GET", "/v2/sandboxes?state=running,paused&limit=100");
      for (const s of JSON.parse(listed.text) as { sandboxID: string }[]) existing.add(s.sandboxID);
      const created = await api("POST", "/v2/sandboxes", { templateID: "base", timeout: 600 });
      assert.equal(created.status, 201, created.text);
      const { sandboxID } = JSON.parse(created.text) as { sandboxID: string };
      const doc = JSON.parse((await api("GET", "/openapi.json")).text) as OpenAPIDocument;
      operations = operationsOf(doc).filter((op) => !(op.method === "POST" && op.path.includes("/builds/")));
      ctx = {
        doc,
        known: {
          sandboxID: [sandboxID],
          sandbox_ids: [sandboxID],
          templateID: ["base"],
          template: ["base"],
          alias: ["base"],
        },
        goodAuth: [{ "X-API-Key": moat.env.E2B_API_KEY! }, { "X-Admin-Token": moat.env.MOAT_ADMIN_TOKEN! }],
        maxBodyBytes: 1024 * 1024,
      };
    });

    after(async () => {
      // Every sandbox the fuzzing created (real ones: valid creates went through).
      const listed = await api("GET", "/v2/sandboxes?state=running,paused&limit=100");
      for (const s of JSON.parse(listed.text) as { sandboxID: string }[]) {
        if (!existing.has(s.sandboxID)) await api("DELETE", `/sandboxes/${s.sandboxID}`);
      }
    });

    test("documented operations and stray requests", async () => {
      const paths = operations.map((op) => op.path);
      const requests = fc.oneof(
        {
          weight: 4,
          arbitrary: fc.oneof(...operations.map((op) => requestsFor(op, ctx).map((req) => ({ op, req })))),
        },
        { weight: 1, arbitrary: strayRequests(ctx, paths).map((req) => ({ op: undefined, req })) },
      );
      await fuzz(
        "API against moat up",
        fc.asyncProperty(requests, async ({ op, req }) => {
          const answer = await send(apiPort, { ...req, target: req.target }, DEADLINE_MS);
          const documented = new Set([...(op?.statuses ?? [])].filter((s) => s >= 500));
          const problems = apiAnswerProblems(answer, req.method, documented);
          const health = await send(apiPort, { method: "GET", target: "/health", headers: {} }, DEADLINE_MS);
          if (health.status !== 200) problems.push(`/health answered ${health.status} afterwards`);
          if (moat.child.exitCode !== null) problems.push(`moat exited with ${moat.child.exitCode}`);
          assert.deepEqual(
            problems,
            [],
            `${req.method} ${req.target.slice(0, 300)} (${req.how.join(", ") || "valid-looking"}) → ${answer.status} ${answer.text.slice(0, 300)}`,
          );
        }),
        { numRuns: runs(0.4) },
      );
    });

    test("malformed HTTP on a raw socket: a JSON error or a close, never a hang or a crash", async () => {
      const targets = {
        domain: "moat.local",
        proxyPort: apiPort,
        sandboxIDs: [],
        ports: ["3000"],
        accessTokens: [],
        trafficTokens: [],
      };
      await fuzz(
        "API raw HTTP",
        fc.asyncProperty(rawHTTP(targets), async (bytes) => {
          const reply = await exchangeRaw(apiPort, bytes);
          const problems = rawAnswerProblems(reply);
          const health = await send(apiPort, { method: "GET", target: "/health", headers: {} }, DEADLINE_MS);
          if (health.status !== 200) problems.push(`/health answered ${health.status} afterwards`);
          assert.deepEqual(
            problems,
            [],
            `${JSON.stringify(bytes.slice(0, 300))} → ${JSON.stringify(reply.slice(0, 300))}`,
          );
        }),
        { numRuns: runs(0.3) },
      );
    });

    test("moat still creates and runs a sandbox afterwards, and logged no escaped error", async () => {
      const created = await api("POST", "/v2/sandboxes", { templateID: "base", timeout: 60 });
      assert.equal(created.status, 201, created.text);
      const { sandboxID } = JSON.parse(created.text) as { sandboxID: string };
      assert.equal((await api("DELETE", `/sandboxes/${sandboxID}`)).status, 204);
      assert.doesNotMatch(moat.log(), /unhandled|uncaught|request failed/i);
    });
  });
}
