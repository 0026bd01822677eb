/**
 * The node's Prometheus metrics (telemetry/prometheus.ts) on a fake runtime: operations timed,
 * sandboxes by state, per-sandbox usage from a fake cgroup tree, and the endpoint's token.
 */
import assert from "node:assert/strict";
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import { createNoopLogger } from "@moat/shared";
import type { Runsc } from "../src/runtime/runsc.js";
import { SandboxManager } from "../src/sandbox/manager.js";
import { NodeMetrics, readCgroupUsage, serveNodeMetrics } from "../src/telemetry/prometheus.js";
import { FakeFactory } from "./fakes/factory.js";
import { BASE, createInput } from "./fakes/inputs.js";

const TOKEN = "node-metrics-token-0123456789";

/** The value of one series in a text exposition, e.g. `moat_orchestrator_sandboxes{state="running"}`. */
function sample(text: string, series: string): number | undefined {
  const line = text.split("\n").find((l) => l.startsWith(`${series} `));
  return line === undefined ? undefined : Number(line.slice(series.length + 1));
}

describe("node Prometheus metrics", () => {
  let dataDir: string;
  let cgroups: string;
  let manager: SandboxManager;
  let metrics: NodeMetrics;

  before(async () => {
    dataDir = await mkdtemp(path.join(tmpdir(), "moat-prometheus-"));
    cgroups = path.join(dataDir, "cgroup");
    manager = new SandboxManager({
      dataDir,
      runsc: {} as Runsc,
      templates: { resolve: (id: string) => (id === "base" ? BASE : undefined) },
      nodeBinary: "/usr/bin/node",
      envdDir: "/nonexistent",
      logger: createNoopLogger(),
      maxSandboxes: 10,
      maxStarting: 4,
      pidsLimit: 100,
      envdReadyTimeoutMs: 1000,
      poolSize: 0,
      diskSizeMB: 0,
      factory: new FakeFactory(),
    });
    metrics = new NodeMetrics({ manager, dataDir, cgroupRoot: cgroups });
    manager.observe = metrics.observe;
  });

  after(async () => {
    await manager?.close();
    await rm(dataDir, { recursive: true, force: true });
  });

  test("creates, pauses, resumes and kills are timed; sandboxes are counted by state", async () => {
    await manager.create(createInput("m1"));
    await manager.create(createInput("m2"));
    await manager.pause("m2");
    await manager.resume("m2", new Date(Date.now() + 60_000));
    await manager.pause("m2");
    await manager.kill("m1");
    const text = await metrics.text();
    assert.equal(sample(text, 'moat_orchestrator_create_duration_seconds_count{start="cold"}'), 2, text);
    assert.equal(sample(text, "moat_orchestrator_pause_duration_seconds_count"), 2);
    assert.equal(sample(text, 'moat_orchestrator_resume_duration_seconds_count{from="memory"}'), 1);
    assert.equal(sample(text, "moat_orchestrator_kill_duration_seconds_count"), 1);
    assert.equal(sample(text, 'moat_orchestrator_sandboxes{state="paused"}'), 1);
    assert.equal(sample(text, 'moat_orchestrator_sandboxes{state="running"}'), 0, "a state with none is 0");
    assert.equal(sample(text, 'moat_orchestrator_sandbox_events_total{type="created"}'), 2);
    assert.equal(sample(text, "moat_orchestrator_warm_pool_target"), 0);
    assert.ok((sample(text, "moat_node_cpus") ?? 0) >= 1);
    assert.ok((sample(text, 'moat_node_memory_bytes{kind="total"}') ?? 0) > 0);
    assert.ok((sample(text, 'moat_node_disk_bytes{kind="total"}') ?? 0) > 0);
    assert.ok((sample(text, 'moat_node_cpu_seconds_total{mode="busy"}') ?? 0) > 0);
    await manager.kill("m2");
  });

  test("each running sandbox's CPU and memory come from its cgroup; a gone sandbox's series go", async () => {
    const sandbox = await manager.create(createInput("m3"));
    const id = sandbox.record.lifecycleID;
    await mkdir(path.join(cgroups, "cpuacct/moat", id), { recursive: true });
    await mkdir(path.join(cgroups, "memory/moat", id), { recursive: true });
    await writeFile(path.join(cgroups, "cpuacct/moat", id, "cpuacct.usage"), "2500000000\n");
    await writeFile(path.join(cgroups, "memory/moat", id, "memory.usage_in_bytes"), "73400320\n");
    let text = await metrics.text();
    assert.equal(sample(text, 'moat_sandbox_cpu_seconds_total{sandbox_id="m3"}'), 2.5, text);
    assert.equal(sample(text, 'moat_sandbox_memory_bytes{sandbox_id="m3"}'), 73400320);
    await manager.pause("m3");
    text = await metrics.text();
    assert.doesNotMatch(text, /sandbox_id="m3"/, "a paused sandbox has no usage series");
    await manager.kill("m3");
  });

  test("cgroup v2 files are read too; a container id that is not a name reads nothing", async () => {
    await mkdir(path.join(cgroups, "moat/c2"), { recursive: true });
    await writeFile(path.join(cgroups, "moat/c2/cpu.stat"), "usage_usec 1500000\nuser_usec 1000000\n");
    await writeFile(path.join(cgroups, "moat/c2/memory.current"), "4096\n");
    assert.deepEqual(await readCgroupUsage(cgroups, "c2"), { cpuSeconds: 1.5, memoryBytes: 4096 });
    assert.deepEqual(await readCgroupUsage(cgroups, "missing"), {
      cpuSeconds: undefined,
      memoryBytes: undefined,
    });
    assert.deepEqual(await readCgroupUsage(cgroups, "../moat/c2"), {});
  });

  test("GET /metrics needs the metrics token; nothing else is served", async () => {
    const server = await serveNodeMetrics(metrics, {
      host: "127.0.0.1",
      port: 0,
      token: TOKEN,
      logger: createNoopLogger(),
    });
    try {
      const url = `http://127.0.0.1:${server.port}`;
      for (const headers of [{}, { authorization: "Bearer wrong" }, { authorization: TOKEN }]) {
        const reply = await fetch(`${url}/metrics`, { headers });
        assert.equal(reply.status, 401, JSON.stringify(headers));
        const body = (await reply.json()) as { code: number; message: string };
        assert.equal(body.code, 401);
        assert.match(body.message, /Bearer/);
      }
      const ok = await fetch(`${url}/metrics`, { headers: { authorization: `Bearer ${TOKEN}` } });
      assert.equal(ok.status, 200);
      assert.match(ok.headers.get("content-type") ?? "", /^text\/plain; version=0\.0\.4/);
      assert.match(await ok.text(), /^moat_orchestrator_sandboxes\{state="running"\} \d+$/m);
      assert.equal((await fetch(`${url}/`, { headers: { authorization: `Bearer ${TOKEN}` } })).status, 404);
      const post = await fetch(`${url}/metrics`, {
        method: "POST",
        headers: { authorization: `Bearer ${TOKEN}` },
      });
      assert.equal(post.status, 405);
    } finally {
      await server.close();
    }
  });
});
