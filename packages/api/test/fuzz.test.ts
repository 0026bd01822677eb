/**
 * Fuzzing the API in-process (its Hono app on the fake orchestrator): requests generated from the
 * API's own /openapi.json for every operation, valid-looking and mutated, plus requests no route
 * expects and the routes the document hides (signed template-file URLs, the internal catalog).
 * Every answer: no 5xx but those the operation documents (never 500), within a deadline, errors
 * `{code, message}` with code = status, nothing thrown past the app, and the API still healthy.
 *
 * MOAT_FUZZ_SEED replays a run (the failure prints it); MOAT_FUZZ_RUNS sets the runs per property.
 */
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import fc from "fast-check";
import { type Answer, apiAnswerProblems } from "./fuzz/check.js";
import {
  encode,
  type FuzzRequest,
  type OpenAPIDocument,
  type Operation,
  operationsOf,
  type RequestContext,
  requestsFor,
  strayRequests,
} from "./fuzz/openapi.js";
import { fuzz, runs, watchCrashes, withDeadline } from "./fuzz/run.js";
import { backends, createSandbox } from "./helpers.js";
import { buildTemplate, sha256, startTemplateTestAPI, type TemplateTestAPI } from "./template-helpers.js";

const ADMIN_TOKEN = "fuzz-admin-token-0123456789";
/** In-process answers take milliseconds; one taking this long is hung. */
const DEADLINE_MS = 10_000;

/**
 * Names of things that exist, as placeholders resolved when a request is sent: the fuzzers may
 * kill the sandbox or delete the template, and each run gets them back before it starts.
 */
const KNOWN = (name: string) => `zzknown${name}zz`;

/** The routes /openapi.json hides, written out for the fuzzer. */
function hiddenOperations(): Operation[] {
  const file: Operation["params"] = [
    { name: "teamID", in: "path", required: true, schema: { type: "string", pattern: "^[0-9a-f-]{36}$" } },
    { name: "hash", in: "path", required: true, schema: { type: "string", pattern: "^[0-9a-f]{64}$" } },
    { name: "expires", in: "query", required: false, schema: { type: "string" } },
    { name: "signature", in: "query", required: false, schema: { type: "string" } },
  ];
  return [
    {
      method: "GET",
      path: "/template-files/{teamID}/{hash}",
      params: file,
      statuses: new Set(),
      secured: false,
    },
    // The upload's body is raw bytes: the body fuzzing of unexpected bodies covers it.
    {
      method: "PUT",
      path: "/template-files/{teamID}/{hash}",
      params: file,
      statuses: new Set(),
      secured: false,
    },
    {
      method: "GET",
      path: "/internal/catalog/{sandboxID}",
      params: [{ name: "sandboxID", in: "path", required: true, schema: { type: "string" } }],
      statuses: new Set(),
      secured: true,
    },
  ];
}

describe("API fuzzing, in-process from its OpenAPI document", () => {
  let t: TemplateTestAPI;
  let doc: OpenAPIDocument;
  let operations: Operation[];
  let ctx: RequestContext;
  const crashes = watchCrashes();
  /** Placeholder → the current real value. */
  const current = new Map<string, string>();

  /** Whether a request since the last refresh may have deleted the template. */
  let templateAtRisk = true;

  async function refreshKnown(): Promise<void> {
    const sandboxID = current.get(KNOWN("sandboxID"));
    if (!sandboxID || !t.fake.sandboxes.has(sandboxID)) {
      current.set(KNOWN("sandboxID"), (await createSandbox(t)).sandboxID);
    }
    if (!templateAtRisk) return;
    templateAtRisk = false;
    const templateID = current.get(KNOWN("templateID"));
    const found = templateID ? (await t.request(`/templates/${templateID}`)).status === 200 : false;
    if (!found) {
      const name = `fuzz-${Date.now().toString(36)}`;
      const built = await buildTemplate(t, name);
      current.set(KNOWN("templateID"), built.templateID);
      current.set(KNOWN("buildID"), built.buildID);
      current.set(KNOWN("alias"), name);
    }
  }

  async function send(req: FuzzRequest): Promise<Answer> {
    const resolve = (text: string) => {
      let out = text;
      for (const [placeholder, value] of current) out = out.replaceAll(placeholder, value);
      return out;
    };
    const target = resolve(req.target);
    if (req.method === "DELETE") templateAtRisk = true;
    return withDeadline(DEADLINE_MS, `${req.method} ${target.slice(0, 200)}`, async () => {
      const res = await t.api.app.request(target, {
        method: req.method,
        headers: req.headers,
        body: req.body === undefined ? undefined : resolve(req.body),
      });
      const text = req.method === "HEAD" ? "" : await res.text();
      return { status: res.status, headers: res.headers, text };
    });
  }

  /** The request's answer has no problem, nothing crashed, and the API still answers /health. */
  async function check(req: FuzzRequest, documented5xx: ReadonlySet<number>): Promise<void> {
    const answer = await send(req);
    const problems = apiAnswerProblems(answer, req.method, documented5xx);
    problems.push(...crashes.take().map((c) => `crash: ${c}`));
    const health = await t.api.app.request("/health");
    if (health.status !== 200) problems.push(`/health answered ${health.status} afterwards`);
    assert.deepEqual(
      problems,
      [],
      `${req.method} ${req.target.slice(0, 300)} (${req.how.join(", ") || "valid-looking"}) → ${answer.status} ${answer.text.slice(0, 300)}`,
    );
  }

  before(async () => {
    // The fake orchestrator and an in-memory PGlite: fast, and what every API unit test uses.
    t = await startTemplateTestAPI(backends[0]!, { adminToken: ADMIN_TOKEN });
    await refreshKnown();
    const other = await t.newTeam("fuzz-other");
    const accessToken = await t.api.createAccessToken(t.teamID);
    const res = await t.request("/openapi.json");
    assert.equal(res.status, 200);
    doc = (await res.json()) as OpenAPIDocument;
    operations = operationsOf(doc);
    assert.ok(operations.length >= 25, `the document lists ${operations.length} operations`);
    // A real signed URL, so that the signed routes are reached past their signature check.
    const files = Buffer.from("fuzz files");
    const link = await t.request(`/templates/${current.get(KNOWN("templateID"))}/files/${sha256(files)}`);
    const url = new URL(((await link.json()) as { url: string }).url);
    ctx = {
      doc,
      known: {
        sandboxID: [KNOWN("sandboxID"), "base"],
        sandbox_ids: [KNOWN("sandboxID"), `${KNOWN("sandboxID")},nope`],
        templateID: [KNOWN("templateID"), KNOWN("alias"), "base"],
        template: [KNOWN("templateID"), "base"],
        buildID: [KNOWN("buildID")],
        alias: [KNOWN("alias"), "base"],
        teamID: [t.teamID, other.teamID],
        hash: [sha256(files)],
        expires: [url.searchParams.get("expires")!],
        signature: [url.searchParams.get("signature")!],
      },
      goodAuth: [
        { "X-API-Key": t.apiKey },
        { Authorization: `Bearer ${accessToken}` },
        { "X-API-Key": other.apiKey },
        { "X-Admin-Token": ADMIN_TOKEN },
      ],
      maxBodyBytes: t.api.config.maxBodyBytes,
    };
  });

  after(async () => {
    crashes.stop();
    await t?.close();
  });

  test("every documented operation, valid-looking and mutated requests", async () => {
    // One arbitrary per operation, built once (a chain would rebuild it for every request).
    const byOperation = fc.oneof(...operations.map((op) => requestsFor(op, ctx).map((req) => ({ op, req }))));
    await fuzz(
      "documented operations",
      fc
        .asyncProperty(byOperation, async ({ op, req }) => {
          await check(req, new Set([...op.statuses].filter((s) => s >= 500)));
        })
        .beforeEach(refreshKnown),
      { numRuns: runs(3) },
    );
  });

  test("each operation gets its share: one property per operation", async () => {
    for (const op of operations) {
      await fuzz(
        `${op.method} ${op.path}`,
        fc
          .asyncProperty(requestsFor(op, ctx), async (req) => {
            await check(req, new Set([...op.statuses].filter((s) => s >= 500)));
          })
          .beforeEach(refreshKnown),
        { numRuns: runs(0.1) },
      );
    }
  });

  test("routes the document hides (signed file URLs, internal catalog)", async () => {
    const hidden = fc.oneof(...hiddenOperations().map((op) => requestsFor(op, ctx)));
    await fuzz(
      "hidden routes",
      fc.asyncProperty(hidden, (req) => check(req, new Set())).beforeEach(refreshKnown),
      { numRuns: runs(0.5) },
    );
  });

  test("requests no route expects: any method, odd paths and bodies", async () => {
    const paths = [
      ...operations.map((op) => op.path),
      "/metrics",
      "/openapi.json",
      "/admin/teams",
      "/health",
    ];
    await fuzz(
      "stray requests",
      fc.asyncProperty(strayRequests(ctx, paths), (req) => check(req, new Set())).beforeEach(refreshKnown),
      { numRuns: runs(0.5) },
    );
  });

  test("a known request still works after the fuzzing", async () => {
    const res = await t.request(`/sandboxes/${encode(current.get(KNOWN("sandboxID"))!)}`);
    assert.ok(res.status === 200 || res.status === 404, `status ${res.status}`);
    const created = await createSandbox(t);
    assert.ok(created.sandboxID);
  });
});
