/**
 * Telemetry settings (off unless the OTEL_* variables ask), request ids and traceparent parsing.
 * Each start runs in a child process: a tracer provider is process-wide and registered once.
 */
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { once } from "node:events";
import http from "node:http";
import type { AddressInfo } from "node:net";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import { fileURLToPath } from "node:url";
import { requestIdFrom, traceIdOf } from "../src/telemetry/ids.js";
import { tracesExporters } from "../src/telemetry/index.js";

const telemetryModule = path.join(path.dirname(fileURLToPath(import.meta.url)), "../src/telemetry/index.ts");

describe("tracesExporters: off unless asked for", () => {
  test("no variables: off (no default endpoint on localhost)", () => {
    assert.deepEqual(tracesExporters({}), []);
  });
  test("an OTLP endpoint alone turns it on", () => {
    assert.deepEqual(tracesExporters({ OTEL_EXPORTER_OTLP_ENDPOINT: "http://127.0.0.1:4318" }), ["otlp"]);
    assert.deepEqual(tracesExporters({ OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: "http://c/v1/traces" }), ["otlp"]);
  });
  test("OTEL_TRACES_EXPORTER names them; none or OTEL_SDK_DISABLED=true turn it off", () => {
    assert.deepEqual(tracesExporters({ OTEL_TRACES_EXPORTER: "otlp, console" }), ["otlp", "console"]);
    assert.deepEqual(
      tracesExporters({ OTEL_TRACES_EXPORTER: "none", OTEL_EXPORTER_OTLP_ENDPOINT: "http://127.0.0.1:4318" }),
      [],
    );
    assert.deepEqual(
      tracesExporters({
        OTEL_SDK_DISABLED: "TRUE",
        OTEL_TRACES_EXPORTER: "otlp",
        OTEL_EXPORTER_OTLP_ENDPOINT: "x",
      }),
      [],
    );
  });
});

describe("request ids and traceparent", () => {
  test("a well-formed request id is kept; anything else is replaced by a UUID", () => {
    assert.equal(requestIdFrom("req-1.a:b_C"), "req-1.a:b_C");
    for (const bad of [
      undefined,
      null,
      "",
      "x".repeat(129),
      "a b",
      "a\nb",
      "a\r\nforged: 1",
      "é",
      '{"x":1}',
    ]) {
      assert.match(
        requestIdFrom(bad),
        /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/,
        String(bad),
      );
    }
  });
  test("traceIdOf reads a W3C traceparent and refuses malformed or all-zero ones", () => {
    const id = "4bf92f3577b34da6a3ce929d0e0e4736";
    assert.equal(traceIdOf(`00-${id}-00f067aa0ba902b7-01`), id);
    for (const bad of [
      undefined,
      "",
      `01-${id}-00f067aa0ba902b7-01`,
      `00-${id.toUpperCase()}-00f067aa0ba902b7-01`,
      `00-${"0".repeat(32)}-00f067aa0ba902b7-01`,
      `00-${id}-${"0".repeat(16)}-01`,
      `00-${id}-00f067aa0ba902b7-01-extra`,
      `00-${id}x-00f067aa0ba902b7-01`,
    ]) {
      assert.equal(traceIdOf(bad), undefined, String(bad));
    }
  });
});

function listen(server: http.Server, port: number): Promise<void> {
  return new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen(port, "127.0.0.1", () => {
      server.off("error", reject);
      resolve();
    });
  });
}

/** Runs startTelemetry and one span in a child process with exactly `env`; answers what it printed. */
async function runChild(env: Record<string, string>): Promise<{ enabled: boolean; exporters: string[] }> {
  const code = `
    const t = await import(${JSON.stringify(telemetryModule)});
    const telemetry = t.startTelemetry({ serviceName: "moat-test" });
    await t.inSpan("test", "a span", async () => undefined);
    await telemetry.shutdown();
    console.log(JSON.stringify({ enabled: telemetry.enabled, exporters: telemetry.exporters }));
  `;
  const child = spawn(process.execPath, ["--import", "tsx", "--input-type=module", "-e", code], {
    env: { PATH: process.env.PATH ?? "", ...env },
    stdio: ["ignore", "pipe", "inherit"],
  });
  let out = "";
  child.stdout.on("data", (c: Buffer) => {
    out += c.toString();
  });
  const [status] = (await once(child, "exit")) as [number];
  assert.equal(status, 0, out);
  return JSON.parse(out.trim().split("\n").at(-1)!);
}

describe("startTelemetry sends spans only when asked", { timeout: 60_000 }, () => {
  const requests: { path: string; type: string; bytes: number }[] = [];
  let server: http.Server;
  let url: string;
  before(async () => {
    server = http.createServer((req, res) => {
      let bytes = 0;
      req.on("data", (c: Buffer) => {
        bytes += c.length;
      });
      req.on("end", () => {
        requests.push({ path: req.url ?? "", type: req.headers["content-type"] ?? "", bytes });
        res.writeHead(200).end();
      });
    });
    // On OTLP's default port when free: an SDK left at the specification's default would send there.
    await listen(server, 4318).catch(() => listen(server, 0));
    url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });
  after(() => server.close());

  test("no OTEL variables: off, nothing sent (not even to localhost:4318)", async () => {
    const before = requests.length;
    assert.deepEqual(await runChild({}), { enabled: false, exporters: [] });
    assert.equal(requests.length, before);
  });

  test("OTEL_SDK_DISABLED=true beside an endpoint: off, nothing sent", async () => {
    const before = requests.length;
    const result = await runChild({ OTEL_SDK_DISABLED: "true", OTEL_EXPORTER_OTLP_ENDPOINT: url });
    assert.equal(result.enabled, false);
    assert.equal(requests.length, before);
  });

  test("an endpoint: the span goes there as OTLP http/protobuf (the default protocol)", async () => {
    const before = requests.length;
    const result = await runChild({ OTEL_EXPORTER_OTLP_ENDPOINT: url });
    assert.deepEqual(result, { enabled: true, exporters: ["otlp http/protobuf"] });
    const sent = requests.slice(before);
    assert.equal(sent.length, 1);
    assert.equal(sent[0]!.path, "/v1/traces");
    assert.equal(sent[0]!.type, "application/x-protobuf");
    assert.ok(sent[0]!.bytes > 0);
  });
});
