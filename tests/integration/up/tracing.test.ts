/**
 * Traces and request ids end to end: `moat up` with the OTEL_* variables pointing at an OTLP/HTTP
 * receiver this test runs on loopback; the unmodified e2b SDK creates, runs a command, pauses,
 * resumes (connect), kills and builds. Each operation is one trace whose spans, from the API and
 * the orchestrator, link parent to child across the RPC hop.
 */
import assert from "node:assert/strict";
import { once } from "node:events";
import http from "node:http";
import type { AddressInfo } from "node:net";
import { after, before, describe, test } from "node:test";
import { Sandbox, Template } from "e2b";
import { type RunningMoat, startMoat, useMoat } from "../helpers/moat-up.js";

interface ReceivedSpan {
  traceId: string;
  spanId: string;
  parentSpanId: string;
  name: string;
  kind: number;
  scope: string;
  service: string;
  attributes: Record<string, unknown>;
}

/** An OTLP/HTTP (JSON) trace receiver on 127.0.0.1: keeps every span it is sent. */
async function startReceiver(): Promise<{ url: string; spans: ReceivedSpan[]; close(): Promise<void> }> {
  const spans: ReceivedSpan[] = [];
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => {
      if (req.url === "/v1/traces" && req.method === "POST") {
        const body = JSON.parse(Buffer.concat(chunks).toString()) as OTLPTraces;
        for (const rs of body.resourceSpans ?? []) {
          const service = attr(rs.resource?.attributes, "service.name");
          for (const ss of rs.scopeSpans ?? []) {
            for (const s of ss.spans ?? []) {
              spans.push({
                traceId: s.traceId,
                spanId: s.spanId,
                parentSpanId: s.parentSpanId ?? "",
                name: s.name,
                kind: s.kind,
                scope: ss.scope?.name ?? "",
                service: String(service ?? ""),
                attributes: Object.fromEntries((s.attributes ?? []).map((a) => [a.key, value(a.value)])),
              });
            }
          }
        }
      }
      res.writeHead(200, { "content-type": "application/json" }).end("{}");
    });
  });
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    spans,
    close: () => new Promise((resolve) => server.close(() => resolve())),
  };
}

interface OTLPValue {
  stringValue?: string;
  intValue?: string | number;
  boolValue?: boolean;
}
interface OTLPTraces {
  resourceSpans?: {
    resource?: { attributes?: { key: string; value: OTLPValue }[] };
    scopeSpans?: {
      scope?: { name: string };
      spans?: {
        traceId: string;
        spanId: string;
        parentSpanId?: string;
        name: string;
        kind: number;
        attributes?: { key: string; value: OTLPValue }[];
      }[];
    }[];
  }[];
}

function value(v: OTLPValue): unknown {
  return v.stringValue ?? (v.intValue !== undefined ? Number(v.intValue) : v.boolValue);
}
function attr(list: { key: string; value: OTLPValue }[] | undefined, key: string): unknown {
  const found = list?.find((a) => a.key === key);
  return found ? value(found.value) : undefined;
}

const SERVER = 2;
const CLIENT = 3;

describe("moat up: OpenTelemetry traces and request ids", { timeout: 300_000 }, () => {
  let moat: RunningMoat;
  let receiver: Awaited<ReturnType<typeof startReceiver>>;

  before(async () => {
    receiver = await startReceiver();
    moat = await startMoat({
      env: {
        OTEL_EXPORTER_OTLP_ENDPOINT: receiver.url,
        OTEL_EXPORTER_OTLP_PROTOCOL: "http/json",
        OTEL_SERVICE_NAME: "moat-under-test",
        // The collector's credentials: moat's to send with, never a sandbox's to read.
        OTEL_EXPORTER_OTLP_HEADERS: "authorization=Bearer moattest-otel-secret",
        // Spans sent within a moment instead of every 5 s.
        OTEL_BSP_SCHEDULE_DELAY: "100",
      },
    });
    useMoat(moat);
  });

  after(async () => {
    await moat?.cleanup();
    await receiver?.close();
  });

  async function waitForSpan(match: (s: ReceivedSpan) => boolean, what: string): Promise<ReceivedSpan> {
    const deadline = Date.now() + 20_000;
    for (;;) {
      const span = receiver.spans.find(match);
      if (span) return span;
      if (Date.now() > deadline) throw new Error(`no ${what} arrived`);
      await new Promise((r) => setTimeout(r, 100));
    }
  }

  /**
   * The trace of the API's last server span for `route` (with or without /v2), once its node
   * spans are in; answers the trace and its root's name.
   */
  async function traceOf(route: string, nodeSpan: string): Promise<{ trace: ReceivedSpan[]; name: string }> {
    const [method, path] = route.split(" ");
    const names = [route, `${method} /v2${path}`];
    const deadline = Date.now() + 20_000;
    for (;;) {
      const root = receiver.spans.findLast((s) => names.includes(s.name) && s.kind === SERVER);
      const trace = root ? receiver.spans.filter((s) => s.traceId === root.traceId) : [];
      if (root && trace.some((s) => s.name === nodeSpan)) return { trace, name: root.name };
      if (Date.now() > deadline) {
        throw new Error(
          `no trace of ${name} with ${nodeSpan}; received: ${receiver.spans.map((s) => s.name).join(", ")}`,
        );
      }
      await new Promise((r) => setTimeout(r, 100));
    }
  }

  /** API server span → node client span → orchestrator server span → its phases, in one trace. */
  function assertHop(
    { trace, name: apiName }: { trace: ReceivedSpan[]; name: string },
    rpc: string,
    phases: string[],
  ): void {
    const byID = new Map(trace.map((s) => [s.spanId, s]));
    const root = trace.find((s) => s.name === apiName)!;
    assert.equal(root.scope, "moat-api");
    assert.equal(root.service, "moat-under-test");
    const server = trace.find((s) => s.name === `orchestrator.SandboxService/${rpc}`);
    assert.ok(server, `${apiName}: no orchestrator span for ${rpc}: ${trace.map((s) => s.name).join(", ")}`);
    assert.equal(server.scope, "moat-orchestrator");
    assert.equal(server.kind, SERVER);
    const client = byID.get(server.parentSpanId);
    assert.ok(client, `${rpc}: the orchestrator's span has no parent in the trace`);
    assert.equal(client.kind, CLIENT);
    assert.equal(client.scope, "moat-api");
    // The client span hangs under the request's span (maybe through the operation's own spans).
    let up: ReceivedSpan | undefined = client;
    while (up && up !== root) up = byID.get(up.parentSpanId);
    assert.equal(up, root, `${rpc}: the node call is not under ${apiName}`);
    for (const phase of phases) {
      const span = trace.find((s) => s.name === `phase.${phase}` && s.parentSpanId === server.spanId);
      assert.ok(span, `${rpc}: no phase.${phase} under the orchestrator's span`);
    }
  }

  test("create, commands.run, pause, connect and kill: one trace each, API to orchestrator", async () => {
    const sbx = await Sandbox.create("base");
    const create = await traceOf("POST /sandboxes", "phase.init");
    assertHop(create, "Create", ["init"]);
    const root = create.trace.find((s) => s.name === create.name)!;
    assert.equal(root.attributes["moat.sandbox_id"], sbx.sandboxId);
    for (const phase of ["create.template", "create.reserve", "node.create"]) {
      assert.ok(
        create.trace.some((s) => s.name === phase && s.parentSpanId === root.spanId),
        `no ${phase} under the create's span`,
      );
    }
    const out = await sbx.commands.run("echo traced");
    assert.equal(out.stdout.trim(), "traced");
    const env = await sbx.commands.run("env; tr '\\0' '\\n' < /proc/1/environ", { user: "root" });
    assert.doesNotMatch(
      env.stdout,
      /OTEL_|moattest-otel-secret/,
      "moat's OTEL_* variables reached the sandbox",
    );

    await sbx.pause();
    assertHop(
      await traceOf("POST /sandboxes/:sandboxID/pause", "orchestrator.SandboxService/Pause"),
      "Pause",
      [],
    );
    const resumed = await Sandbox.connect(sbx.sandboxId);
    assert.equal((await resumed.commands.run("echo back")).stdout.trim(), "back");
    assertHop(
      await traceOf("POST /sandboxes/:sandboxID/connect", "orchestrator.SandboxService/Resume"),
      "Resume",
      ["init"],
    );
    await resumed.kill();
    assertHop(
      await traceOf("DELETE /sandboxes/:sandboxID", "orchestrator.SandboxService/Delete"),
      "Delete",
      [],
    );
    // Every span of those traces carries one of the two components' scopes, none an unnamed one.
    for (const s of receiver.spans) assert.match(s.scope, /^moat-(api|orchestrator)$/);
  });

  test("a template build: the API's build span, the node call, the orchestrator's build and its steps", async () => {
    const template = Template().fromBaseImage().runCmd("echo traced-build > /tmp/traced");
    await Template.build(template, "moat-traced", { cpuCount: 1, memoryMB: 512 });
    const build = await waitForSpan(
      (s) => s.name === "template.build" && s.scope === "moat-orchestrator",
      "the orchestrator's span of the build",
    );
    const trace = receiver.spans.filter((s) => s.traceId === build.traceId);
    const byID = new Map(trace.map((s) => [s.spanId, s]));
    const client = byID.get(build.parentSpanId);
    assert.equal(client?.name, "node.build");
    assert.equal(client.kind, CLIENT);
    const apiBuild = byID.get(client.parentSpanId);
    assert.equal(apiBuild?.name, "template.build");
    assert.equal(apiBuild.scope, "moat-api");
    // The request that started the build is the trace's root.
    const root = byID.get(apiBuild.parentSpanId);
    assert.equal(root?.kind, SERVER);
    assert.match(root.name, /^POST \/v2\/templates\/:templateID\/builds\/:buildID$/);
    for (const step of ["build.base", "build.step", "build.finalize"]) {
      assert.ok(
        trace.some((s) => s.name === step && s.parentSpanId === build.spanId),
        `no ${step} under the build: ${trace.map((s) => s.name).join(", ")}`,
      );
    }
  });

  test("a client's traceparent is the parent of the API's span", async () => {
    const traceId = "4bf92f3577b34da6a3ce929d0e0e4736";
    const parent = "00f067aa0ba902b7";
    const res = await fetch(`${moat.env.E2B_API_URL}/sandboxes`, {
      headers: { "x-api-key": moat.env.E2B_API_KEY!, traceparent: `00-${traceId}-${parent}-01` },
    });
    assert.equal(res.status, 200);
    const span = await waitForSpan((s) => s.traceId === traceId, "a span in the client's trace");
    assert.equal(span.name, "GET /sandboxes");
    assert.equal(span.parentSpanId, parent);
  });

  test("request ids: answered, in error bodies, and in the API's and orchestrator's log lines", async () => {
    const unauthorised = await fetch(`${moat.env.E2B_API_URL}/sandboxes`, {
      headers: { "x-api-key": "e2b_wrong", "x-request-id": "moattest-req-401" },
    });
    assert.equal(unauthorised.status, 401);
    assert.equal(unauthorised.headers.get("x-request-id"), "moattest-req-401");
    assert.equal(((await unauthorised.json()) as { requestId: string }).requestId, "moattest-req-401");

    // A malformed id (too long, or with characters a log reader could trip on) is replaced.
    const replaced = await fetch(`${moat.env.E2B_API_URL}/sandboxes/nope`, {
      headers: { "x-api-key": moat.env.E2B_API_KEY!, "x-request-id": `moattest-${"x".repeat(200)}` },
    });
    assert.equal(replaced.status, 404);
    const id = replaced.headers.get("x-request-id");
    assert.match(id ?? "", /^[0-9a-f-]{36}$/);
    assert.equal(((await replaced.json()) as { requestId: string }).requestId, id);

    const created = await fetch(`${moat.env.E2B_API_URL}/sandboxes`, {
      method: "POST",
      headers: {
        "x-api-key": moat.env.E2B_API_KEY!,
        "content-type": "application/json",
        "x-request-id": "moattest-req-create",
      },
      body: JSON.stringify({ templateID: "base" }),
    });
    assert.equal(created.status, 201, await created.clone().text());
    assert.equal(created.headers.get("x-request-id"), "moattest-req-create");
    const { sandboxID } = (await created.json()) as { sandboxID: string };
    // The orchestrator's line for it carries the request id it was sent with the RPC, and the trace id.
    const line = moat
      .log()
      .split("\n")
      .find((l) => l.includes('"sandbox created"') && l.includes(sandboxID));
    assert.ok(line, "no orchestrator line for the create");
    const fields = JSON.parse(line) as Record<string, string>;
    assert.equal(fields.requestId, "moattest-req-create");
    assert.match(fields.traceId ?? "", /^[0-9a-f]{32}$/);
    await Sandbox.kill(sandboxID);

    // The client proxy's own errors carry one too.
    const proxied = await fetch(`${moat.env.E2B_SANDBOX_URL}/`, {
      headers: {
        "e2b-sandbox-id": "nosuchsandbox",
        "e2b-sandbox-port": "49983",
        "x-request-id": "moattest-req-proxy",
      },
    });
    assert.equal(proxied.headers.get("x-request-id"), "moattest-req-proxy");
    assert.equal(((await proxied.json()) as { requestId: string }).requestId, "moattest-req-proxy");
  });
});
