/**
 * envd cannot export spans from inside a sandbox: the trace id of a request that carries a W3C
 * traceparent (the node's /init on a create or resume) goes in the log lines written for it.
 */
import assert from "node:assert/strict";
import { Writable } from "node:stream";
import { after, before, describe, test } from "node:test";
import { logContext } from "@moat/shared";
import { pino } from "pino";
import { type Envd, startEnvd } from "../src/server.js";

describe("envd: the caller's trace id in its log lines", () => {
  const lines: Record<string, unknown>[] = [];
  let envd: Envd;
  before(async () => {
    const stream = new Writable({
      write(chunk: Buffer, _encoding, done) {
        for (const line of chunk.toString().split("\n").filter(Boolean)) lines.push(JSON.parse(line));
        done();
      },
    });
    const logger = pino({ level: "info", mixin: () => logContext.getStore() ?? {} }, stream);
    envd = await startEnvd({ port: 0, host: "127.0.0.1", logger });
  });
  after(() => envd?.close());

  const init = (headers: Record<string, string>) =>
    fetch(`http://127.0.0.1:${envd.port}/init`, {
      method: "POST",
      headers: { "content-type": "application/json", ...headers },
      body: JSON.stringify({ envVars: { A: "1" } }),
    });

  test("a well-formed traceparent: its trace id on the line", async () => {
    const traceId = "0af7651916cd43dd8448eb211c80319c";
    const res = await init({ traceparent: `00-${traceId}-b7ad6b7169203331-01` });
    assert.equal(res.status, 204);
    const line = lines.findLast((l) => l.msg === "envd initialised");
    assert.equal(line?.traceId, traceId);
  });

  test("a malformed one, or none: no trace id, and nothing of the header is logged", async () => {
    for (const headers of [{ traceparent: "00-zzzz-forged\tline-01" }, {}]) {
      const before = lines.length;
      assert.equal((await init(headers)).status, 204);
      const line = lines.slice(before).find((l) => l.msg === "envd initialised");
      assert.ok(line);
      assert.equal(line.traceId, undefined);
      assert.ok(!JSON.stringify(line).includes("forged"));
    }
  });
});
