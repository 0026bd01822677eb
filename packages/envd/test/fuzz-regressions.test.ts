/**
 * Counterexamples the envd fuzzer (tests/integration/fuzz/envd.test.ts, which fuzzes envd inside
 * a gVisor sandbox) found, shrunk, replayed here as single fixed requests to an envd on loopback.
 * Only harmless commands and paths: this envd runs on the host.
 */
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { send } from "../../api/test/fuzz/http.js";
import { type Envd, startEnvd } from "../src/server.js";

/** A server-streaming Connect call (JSON, or the raw bytes of a binary message): messages and trailer. */
async function stream(
  envd: Envd,
  procedure: string,
  message: unknown,
  headers: Record<string, string> = {},
  declaredLength?: number,
) {
  const binary = message instanceof Uint8Array;
  const payload = binary ? Buffer.from(message) : Buffer.from(JSON.stringify(message));
  const prefix = Buffer.alloc(5);
  prefix.writeUInt32BE(declaredLength ?? payload.length, 1);
  if (binary) headers = { "Content-Type": "application/connect+proto", ...headers };
  const answer = await send(
    envd.port,
    {
      method: "POST",
      target: `/${procedure}`,
      headers: { "Content-Type": "application/connect+json", "Connect-Protocol-Version": "1", ...headers },
      body: Buffer.concat([prefix, payload]),
    },
    10_000,
  );
  assert.equal(answer.status, 200, answer.text);
  const frames: { flags: number; json: Record<string, unknown> }[] = [];
  for (let at = 0; at < answer.body.length; ) {
    const length = answer.body.readUInt32BE(at + 1);
    const json = JSON.parse(answer.body.subarray(at + 5, at + 5 + length).toString()) as Record<
      string,
      unknown
    >;
    frames.push({ flags: answer.body[at]!, json });
    at += 5 + length;
  }
  const trailer = frames.at(-1)!;
  assert.equal(trailer.flags, 2, "the stream ends with its end-of-stream envelope");
  return {
    messages: frames.slice(0, -1).map((f) => f.json),
    error: trailer.json.error as { code: string } | undefined,
  };
}

describe("envd fuzz regressions", () => {
  let envd: Envd;
  before(async () => {
    envd = await startEnvd({ port: 0, host: "127.0.0.1" });
  });
  after(() => envd.close());

  // A Connect-Timeout-Ms past what a Node timer holds fired at once: the call ended with
  // deadline_exceeded and the process was killed as soon as it started.
  test("a Connect-Timeout-Ms longer than a timer holds is refused, not shortened to nothing", async () => {
    const start = { process: { cmd: "/bin/sh", args: ["-c", "sleep 0.1; echo done"] }, stdin: false };
    const refused = await stream(envd, "process.Process/Start", start, {
      "Connect-Timeout-Ms": "9999999999",
    });
    assert.equal(refused.error?.code, "invalid_argument");
    const longest = await stream(envd, "process.Process/Start", start, {
      "Connect-Timeout-Ms": "2147483647",
    });
    assert.equal(longest.error, undefined, JSON.stringify(longest));
    const stdout = longest.messages
      .map((m) => (m.event as { data?: { stdout?: string } }).data?.stdout)
      .filter((s) => s !== undefined)
      .map((s) => Buffer.from(s, "base64").toString())
      .join("");
    assert.equal(stdout, "done\n");
  });

  // connect-es answered these `internal` (HTTP 500 on unary calls): the client's bytes are bad.
  test("a protobuf message that does not parse is invalid_argument, unary or streamed", async () => {
    // A Stat request whose one field claims 5 bytes and has 1.
    const unary = await send(
      envd.port,
      {
        method: "POST",
        target: "/filesystem.Filesystem/Stat",
        headers: { "Content-Type": "application/proto", "Connect-Protocol-Version": "1" },
        body: Buffer.from([10, 5, 1]),
      },
      10_000,
    );
    assert.equal(unary.status, 400, unary.text);
    assert.equal((JSON.parse(unary.text) as { code: string }).code, "invalid_argument");
    // The fuzzer's WatchDir: an envelope whose declared length is one byte short of its message.
    const streamed = await stream(envd, "filesystem.Filesystem/WatchDir", Buffer.from([32, 1]), {}, 1);
    assert.equal(streamed.error?.code, "invalid_argument");
  });

  // Node's spawn threw on these before any process existed: the call ended `internal`.
  test("a NUL in a command, an argument or the environment is invalid_argument", async () => {
    for (const config of [
      { cmd: "a\u0000b" },
      { cmd: "/bin/echo", args: ["a\u0000"] },
      { cmd: "/bin/echo", envs: { "A\u0000": "1" } },
      { cmd: "/bin/echo", envs: { A: "\u0000" } },
    ]) {
      const { error } = await stream(envd, "process.Process/Start", { process: config, stdin: false });
      assert.equal(error?.code, "invalid_argument", JSON.stringify(config));
    }
  });

  // This answered `internal` (HTTP 500), as if envd had failed, for a mistake of the client.
  test("input to a process whose stdin is off or closed is failed_precondition", async () => {
    const unary = async (procedure: string, message: unknown) => {
      const answer = await send(
        envd.port,
        {
          method: "POST",
          target: `/${procedure}`,
          headers: { "Content-Type": "application/json", "Connect-Protocol-Version": "1" },
          body: JSON.stringify(message),
        },
        10_000,
      );
      return { status: answer.status, body: JSON.parse(answer.text) as { code?: string } };
    };
    const payload = Buffer.from(
      JSON.stringify({ process: { cmd: "sleep", args: ["30"] }, tag: "no-stdin", stdin: false }),
    );
    const prefix = Buffer.alloc(5);
    prefix.writeUInt32BE(payload.length, 1);
    // Only its start event is needed: the stream is cut and the process keeps running.
    await send(
      envd.port,
      {
        method: "POST",
        target: "/process.Process/Start",
        headers: { "Content-Type": "application/connect+json" },
        body: Buffer.concat([prefix, payload]),
      },
      5_000,
      { liveMs: 300 },
    );
    const process = { tag: "no-stdin" };
    try {
      const input = await unary("process.Process/SendInput", { process, input: { stdin: "aGk=" } });
      assert.deepEqual([input.status, input.body.code], [400, "failed_precondition"]);
    } finally {
      await unary("process.Process/SendSignal", { process, signal: "SIGNAL_SIGKILL" });
    }
  });

  // Found through the client proxy: connect-es answers another method than POST (405) and a
  // content type no protocol takes (415) with a bare status, the only envd errors without a body.
  test("an RPC asked with another method than POST, or an unknown content type, is a JSON error", async () => {
    for (const method of ["GET", "PUT", "DELETE"]) {
      const answer = await send(envd.port, { method, target: "/process.Process/List", headers: {} }, 5_000);
      assert.equal(answer.status, 405);
      assert.equal(answer.headers.get("allow"), "POST");
      assert.deepEqual(JSON.parse(answer.text), {
        code: 405,
        message: `${method} is not allowed here: RPCs take POST`,
      });
    }
    for (const [target, type] of [
      ["/process.Process/List", "text/plain"],
      ["/process.Process/Start", "application/json"], // a stream takes application/connect+json
    ]) {
      const answer = await send(
        envd.port,
        { method: "POST", target: target!, headers: { "Content-Type": type! }, body: Buffer.from("{}") },
        5_000,
      );
      assert.equal(answer.status, 415);
      assert.match(answer.headers.get("content-type") ?? "", /^application\/json/);
      const body = JSON.parse(answer.text) as { code: number; message: string };
      assert.equal(body.code, 415);
      assert.match(body.message, new RegExp(`content type '${type}'`));
    }
    const head = await send(
      envd.port,
      { method: "HEAD", target: "/filesystem.Filesystem/Stat", headers: {} },
      5_000,
    );
    assert.equal(head.status, 405);
    assert.equal(head.text, "");
  });
});
