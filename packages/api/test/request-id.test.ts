/**
 * Request ids: the API keeps a client's well-formed X-Request-Id or makes one, answers it, puts it
 * in every error body and in every log line written for the request.
 */
import assert from "node:assert/strict";
import { Writable } from "node:stream";
import { after, before, describe, test } from "node:test";
import { Code } from "@connectrpc/connect";
import { logContext } from "@moat/shared";
import { pino } from "pino";
import { backends, startTestAPI, type TestAPI } from "./helpers.js";

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

/** A logger like createLogger's (the same logContext mixin) whose lines the test reads. */
function capturingLogger() {
  const lines: Record<string, unknown>[] = [];
  const stream = new Writable({
    write(chunk: Buffer, _encoding, done) {
      for (const line of chunk.toString().split("\n").filter(Boolean)) lines.push(JSON.parse(line));
      done();
    },
  });
  const logger = pino({ level: "debug", mixin: () => logContext.getStore() ?? {} }, stream);
  return { logger, lines };
}

// One backend is enough: nothing here touches the database beyond authentication.
const backend = backends[0]!;
describe("request ids", () => {
  let t: TestAPI;
  const { logger, lines } = capturingLogger();
  before(async () => {
    t = await startTestAPI(backend, { logger });
  });
  after(() => t.close());

  test("a well-formed X-Request-Id is answered, in the header and the error body", async () => {
    const res = await t.request("/sandboxes/nosuchsandbox", { headers: { "X-Request-Id": "client-req.1" } });
    assert.equal(res.status, 404);
    assert.equal(res.headers.get("x-request-id"), "client-req.1");
    const body = (await res.json()) as { code: number; message: string; requestId: string };
    assert.equal(body.code, 404);
    assert.equal(body.requestId, "client-req.1");
  });

  test("without one, or with a malformed one, the API makes one", async () => {
    for (const presented of [undefined, "x".repeat(129), "two words", "ünïcode", "a\tb"]) {
      const res = await t.request("/sandboxes", {
        key: "e2b_notakey",
        headers: presented === undefined ? {} : { "X-Request-Id": presented },
      });
      assert.equal(res.status, 401);
      const id = res.headers.get("x-request-id") ?? "";
      assert.match(id, UUID, String(presented));
      assert.equal(((await res.json()) as { requestId: string }).requestId, id);
    }
  });

  test("success answers carry it too, and every log line of the request", async () => {
    const res = await t.request("/sandboxes", { headers: { "X-Request-Id": "listing-42" } });
    assert.equal(res.status, 200);
    assert.equal(res.headers.get("x-request-id"), "listing-42");
    const mine = lines.filter((l) => l.requestId === "listing-42");
    assert.ok(
      mine.some((l) => l.msg === "request" && l.status === 200),
      "the request's log line carries its id",
    );
  });

  test("a node's failure: its id in the error body and in the lines logged about it", async () => {
    t.fake.failNext("create", Code.Internal, "disk exploded");
    const res = await t.request("/sandboxes", {
      method: "POST",
      json: { templateID: "base" },
      headers: { "X-Request-Id": "will-fail" },
    });
    assert.ok(res.status >= 500, String(res.status));
    assert.equal(((await res.json()) as { requestId: string }).requestId, "will-fail");
    const logged = lines.filter((l) => l.requestId === "will-fail" && (l.level as number) >= 40);
    assert.ok(logged.length > 0, "the failure is logged with the request's id");
  });

  test("the traceparent's trace id goes in the log lines even with tracing off", async () => {
    const traceId = "4bf92f3577b34da6a3ce929d0e0e4736";
    await t.request("/sandboxes", {
      headers: { "X-Request-Id": "traced-1", traceparent: `00-${traceId}-00f067aa0ba902b7-01` },
    });
    const line = lines.find((l) => l.requestId === "traced-1" && l.msg === "request");
    assert.equal(line?.traceId, traceId);
  });
});
