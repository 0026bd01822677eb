import assert from "node:assert/strict";
import { rm } from "node:fs/promises";
import net from "node:net";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import { resultLine } from "../src/execute.js";
import { findLanguage } from "../src/languages.js";
import { type CodeInterpreterServer, startServer } from "../src/server.js";

/** A port nothing listens on (envd's, here). */
async function closedPort(): Promise<number> {
  const server = net.createServer().listen(0, "127.0.0.1");
  await new Promise((r) => server.once("listening", r));
  const { port } = server.address() as net.AddressInfo;
  await new Promise((r) => server.close(r));
  return port;
}

describe("code-interpreter server: input checked before any kernel is involved", () => {
  let server: CodeInterpreterServer;
  let base: string;
  const runtimeDir = path.join(tmpdir(), `moat-ci-test-${process.pid}`);

  before(async () => {
    const envd = await closedPort();
    server = await startServer({
      port: 0,
      host: "127.0.0.1",
      runtimeDir,
      // No kernelspecs: the default context never starts.
      kernelDirs: [],
      envdURL: `http://127.0.0.1:${envd}`,
      supportDir: "/nonexistent",
      log: () => undefined,
    });
    base = `http://127.0.0.1:${server.port}`;
  });

  after(async () => {
    await server.close();
    await rm(runtimeDir, { recursive: true, force: true });
  });

  const post = async (path: string, body: string) => {
    const res = await fetch(`${base}${path}`, {
      method: "POST",
      body,
      headers: { "content-type": "application/json" },
    });
    return { status: res.status, body: (await res.json()) as { code: number; message: string } };
  };

  test("malformed /execute bodies are 400 {code, message}", async () => {
    const cases: Array<[string, RegExp]> = [
      ["{not json", /not valid JSON/],
      ["[1]", /JSON object/],
      ['{"code": 5}', /'code' must be a string/],
      ['{"code": "1", "language": "python", "context_id": "x"}', /not both/],
      ['{"code": "1", "env_vars": {"A B": "x"}}', /not a valid env var name/],
      ['{"code": "1", "env_vars": {"A": 1}}', /must be a string/],
      ['{"code": "1", "env_vars": []}', /JSON object/],
      ['{"code": "1", "language": 3}', /'language' must be a string/],
    ];
    for (const [body, message] of cases) {
      const res = await post("/execute", body);
      assert.equal(res.status, 400, body);
      assert.equal(res.body.code, 400);
      assert.match(res.body.message, message, body);
    }
  });

  test("/health is 503 until the default context runs; unknown routes 404; wrong methods 405", async () => {
    const health = await fetch(`${base}/health`);
    assert.equal(health.status, 503);
    assert.equal(((await health.json()) as { code: number }).code, 503);
    const missing = await fetch(`${base}/nope`);
    assert.equal(missing.status, 404);
    assert.match(((await missing.json()) as { message: string }).message, /no route GET \/nope/);
    const wrong = await fetch(`${base}/execute`);
    assert.equal(wrong.status, 405);
  });

  test("an oversized body is 413", async () => {
    const res = await post("/execute", JSON.stringify({ code: "x".repeat(17 * 2 ** 20) }));
    assert.equal(res.status, 413);
  });
});

describe("code-interpreter mapping", () => {
  test("MIME bundles become the SDK's result fields; others go under extra", () => {
    assert.deepEqual(
      resultLine(
        {
          "text/plain": "2",
          "image/png": "iVBOR",
          "e2b/chart": { type: "line" },
          "application/x-custom": "c",
        },
        true,
      ),
      {
        type: "result",
        is_main_result: true,
        text: "2",
        png: "iVBOR",
        chart: { type: "line" },
        extra: { "application/x-custom": "c" },
      },
    );
    assert.deepEqual(resultLine({ "text/html": ["<b>", "x</b>"] }, false), {
      type: "result",
      is_main_result: false,
      html: "<b>x</b>",
    });
  });

  test("languages: names are trimmed and lowercased, aliases resolve, unknown ones do not", () => {
    assert.equal(findLanguage(" Python ")?.kernel, "python3");
    assert.equal(findLanguage("R")?.kernel, "ir");
    assert.equal(findLanguage("ts")?.name, "javascript");
    assert.equal(findLanguage("cobol"), undefined);
  });
});
