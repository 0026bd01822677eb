/** The node's sandbox metrics history: the store's files (format, cap, team, retention) and the sampler. */
import assert from "node:assert/strict";
import { mkdir, mkdtemp, readdir, rm, stat, utimes, writeFile } from "node:fs/promises";
import http from "node:http";
import type { AddressInfo } from "node:net";
import os from "node:os";
import path from "node:path";
import { after, before, test } from "node:test";
import { createNoopLogger } from "@moat/shared";
import { checkMetricsInterval, checkRetentionHours, readNodeConfig } from "../src/config.js";
import { cgroupCpuNs, cpuPercentBetween } from "../src/telemetry/metrics/cgroup-cpu.js";
import {
  MAX_METRICS_BODY_BYTES,
  MetricsSampler,
  readEnvdMetrics,
  type SampledSandbox,
  toSample,
} from "../src/telemetry/metrics/sampler.js";
import { decode, encode, type MetricSample, MetricsStore } from "../src/telemetry/metrics/store.js";

let root: string;
before(async () => {
  root = await mkdtemp(path.join(os.tmpdir(), "moat-metrics-"));
});
after(() => rm(root, { recursive: true, force: true }));

const HOUR = 3_600_000;
let dirs = 0;
function store(options: { retentionMs?: number; maxFileBytes?: number; now?: () => number } = {}) {
  const dir = path.join(root, `store-${dirs++}`);
  return { dir, store: new MetricsStore({ dir, retentionMs: options.retentionMs ?? 24 * HOUR, ...options }) };
}

function sample(time: number, cpuUsedPct = 10): MetricSample {
  return {
    time,
    cpuCount: 2,
    cpuUsedPct,
    memUsed: 100 * 2 ** 20,
    memTotal: 512 * 2 ** 20,
    memCache: 4096,
    diskUsed: 2 ** 30,
    diskTotal: 10 * 2 ** 30,
  };
}

const nowSeconds = () => Math.floor(Date.now() / 1000);

test("a sample survives its 32 bytes; nonsense is clamped, never stored as it came", () => {
  const s = sample(1_700_000_000, 37.25);
  assert.deepEqual(decode(encode(s)), s);
  const hostile = decode(
    encode({
      time: 1,
      cpuCount: 1e9,
      cpuUsedPct: Number.POSITIVE_INFINITY,
      memUsed: -5,
      memTotal: Number.NaN,
      memCache: 2 ** 60,
      diskUsed: 0,
      diskTotal: 0,
    }),
  );
  assert.equal(hostile.cpuCount, 0xffff);
  assert.equal(hostile.cpuUsedPct, 0);
  assert.equal(hostile.memUsed, 0);
  assert.equal(hostile.memTotal, 0);
  assert.equal(hostile.memCache, 0xffff_ffff * 1024);
});

test("samples in a range, oldest first; the latest; averaged over a step", async () => {
  const { store: s } = store();
  const t0 = nowSeconds() - 100;
  for (let i = 0; i < 10; i++) await s.append("sbx1", "team-a", sample(t0 + i, i * 10));
  const all = await s.read("sbx1", "team-a");
  assert.deepEqual(
    all.map((x) => x.time),
    Array.from({ length: 10 }, (_, i) => t0 + i),
  );
  const some = await s.read("sbx1", "team-a", { start: t0 + 2, end: t0 + 4 });
  assert.deepEqual(
    some.map((x) => x.cpuUsedPct),
    [20, 30, 40],
  );
  assert.deepEqual(
    (await s.read("sbx1", "team-a", { latest: true })).map((x) => x.cpuUsedPct),
    [90],
  );
  const stepped = await s.read("sbx1", "team-a", { stepSeconds: 5, start: t0, end: t0 + 9 });
  assert.ok(stepped.length >= 2 && stepped.length <= 3, `${stepped.length} buckets`);
  assert.equal(
    stepped.reduce((n, x) => n + (x.time % 5 === 0 ? 1 : 0), 0),
    stepped.length,
  );
  assert.deepEqual(await s.read("nosuch", "team-a"), []);
});

test("another team's read of a sandbox's file finds nothing, as for a missing one", async () => {
  const { store: s } = store();
  await s.append("sbx2", "team-a", sample(nowSeconds()));
  assert.equal((await s.read("sbx2", "team-a")).length, 1);
  assert.deepEqual(await s.read("sbx2", "team-b"), []);
  assert.deepEqual(await s.read("sbx2", ""), []);
});

test("a sandbox id that is not one (a path) is refused before any file is touched", async () => {
  const { dir, store: s } = store();
  // A file beside the store's directory that such an id would reach.
  await s.append("sbx3", "team-a", sample(nowSeconds()));
  await writeFile(path.join(dir, "..", "outside.metrics"), "x");
  for (const id of ["../outside", "..", "a/b", "", "A", "x".repeat(64), "sbx3\0"]) {
    await assert.rejects(() => s.read(id, "team-a"), /must match/, id);
    await assert.rejects(() => s.append(id, "team-a", sample(nowSeconds())), /must match/, id);
  }
  assert.deepEqual(await readdir(dir), ["sbx3.metrics"]);
});

test("bad ranges are refused: start after end, negative, fractional", async () => {
  const { store: s } = store();
  await assert.rejects(() => s.read("sbx4", "t", { start: 10, end: 5 }), /start \(10\) is after end \(5\)/);
  await assert.rejects(() => s.read("sbx4", "t", { start: -1 }), /whole number/);
  await assert.rejects(() => s.read("sbx4", "t", { end: 1.5 }), /whole number/);
  await assert.rejects(() => s.read("sbx4", "t", { stepSeconds: -5 }), /whole number/);
});

test("a file never grows past its cap: the oldest quarter goes", async () => {
  const cap = 64 + 32 * 40;
  const { dir, store: s } = store({ maxFileBytes: cap });
  const t0 = nowSeconds() - 1000;
  for (let i = 0; i < 200; i++) {
    await s.append("sbx5", "team-a", sample(t0 + i));
    assert.ok((await stat(path.join(dir, "sbx5.metrics"))).size <= cap);
  }
  const kept = await s.read("sbx5", "team-a");
  assert.ok(kept.length >= 30 && kept.length <= 40, `${kept.length}`);
  assert.equal(kept[kept.length - 1]!.time, t0 + 199, "the newest is kept");
  assert.deepEqual(
    kept.map((x) => x.time),
    [...kept.map((x) => x.time)].sort((a, b) => a - b),
  );
});

test("retention: older samples are not served, and files untouched for longer are swept", async () => {
  let now = Date.now();
  const { dir, store: s } = store({ retentionMs: HOUR, now: () => now });
  const t = Math.floor(now / 1000);
  await s.append("old", "team-a", sample(t - 2 * 3600));
  await s.append("old", "team-a", sample(t - 10));
  await s.append("ended", "team-a", sample(t - 10));
  assert.deepEqual(
    (await s.read("old", "team-a")).map((x) => x.time),
    [t - 10],
  );
  // "ended" last written two hours ago; "old" just now.
  const twoHoursAgo = new Date(now - 2 * HOUR);
  await utimes(path.join(dir, "ended.metrics"), twoHoursAgo, twoHoursAgo);
  assert.equal(await s.sweep(), 1);
  assert.deepEqual(await readdir(dir), ["old.metrics"]);
  now += 2 * HOUR;
  assert.deepEqual(await s.read("old", "team-a"), []);
  assert.equal(await s.sweep(), 1);
  // Written again after the sweep: a new file.
  await s.append("old", "team-a", sample(Math.floor(now / 1000)));
  assert.equal((await s.read("old", "team-a")).length, 1);
});

test("a file found damaged or another team's is started afresh on the next append", async () => {
  const { dir, store: s } = store();
  await writeFile(path.join(dir, "..", "placeholder"), "");
  const { store: first } = { store: s };
  await first.append("sbx6", "team-a", sample(nowSeconds()));
  await writeFile(
    path.join(dir, "sbx6.metrics"),
    "garbage that is not a metrics file at all, long enough....",
  );
  const fresh = new MetricsStore({ dir, retentionMs: HOUR });
  await fresh.append("sbx6", "team-b", sample(nowSeconds()));
  assert.equal((await fresh.read("sbx6", "team-b")).length, 1);
  assert.deepEqual(await fresh.read("sbx6", "team-a"), []);
});

test("retention and interval settings: defaults, bounds, clear errors", () => {
  assert.equal(readNodeConfig({}).metricsIntervalSeconds, 5);
  assert.equal(readNodeConfig({}).metricsRetentionHours, 24);
  assert.equal(readNodeConfig({ MOAT_METRICS_INTERVAL: "0" }).metricsIntervalSeconds, 0);
  assert.equal(readNodeConfig({ MOAT_METRICS_RETENTION_HOURS: "0.5" }).metricsRetentionHours, 0.5);
  assert.throws(
    () => readNodeConfig({ MOAT_METRICS_INTERVAL: "-1" }),
    /MOAT_METRICS_INTERVAL must be a whole number of seconds/,
  );
  assert.throws(
    () => readNodeConfig({ MOAT_METRICS_RETENTION_HOURS: "0" }),
    /MOAT_METRICS_RETENTION_HOURS must be/,
  );
  assert.throws(() => checkRetentionHours("forever"), /must be a number of hours/);
  // Past 2^31 ms a timer fires at once: an interval that long is refused, not run every millisecond.
  assert.throws(() => readNodeConfig({ MOAT_METRICS_INTERVAL: "3000000" }), /from 0 \(off\) to 3600/);
  assert.throws(() => checkMetricsInterval(1.5), /whole number of seconds/);
});

/** An envd stand-in on loopback answering /metrics with `answer`. */
async function fakeEnvd(
  answer: (req: http.IncomingMessage, res: http.ServerResponse) => void,
): Promise<{ port: number; calls: () => number; close(): Promise<void> }> {
  let calls = 0;
  const server = http.createServer((req, res) => {
    calls++;
    answer(req, res);
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return {
    port: (server.address() as AddressInfo).port,
    calls: () => calls,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

const ENVD_BODY = {
  ts: 1,
  cpu_count: 2,
  cpu_used_pct: 42.5,
  mem_total: 512 * 2 ** 20,
  mem_used: 64 * 2 ** 20,
  mem_cache: 8 * 2 ** 20,
  mem_total_mib: 512,
  mem_used_mib: 64,
  disk_used: 2 ** 30,
  disk_total: 10 * 2 ** 30,
};

function sandbox(id: string, state: string, kind = "user"): SampledSandbox {
  return {
    id,
    state,
    kind,
    hostAddress: "127.0.0.1",
    record: { teamID: "team-a", envdAccessToken: "tok", lifecycleID: `${id}-c1`, vcpu: 2 },
  };
}

test("the sampler reads running user sandboxes only (with their token), stamped by the node's clock", async () => {
  const tokens: Array<string | undefined> = [];
  const envd = await fakeEnvd((req, res) => {
    tokens.push(req.headers["x-access-token"] as string | undefined);
    res.setHeader("content-type", "application/json");
    res.end(JSON.stringify(ENVD_BODY));
  });
  try {
    const { store: s } = store();
    const sampler = new MetricsSampler({
      store: s,
      sandboxes: () => [
        sandbox("run1", "running"),
        sandbox("paused1", "paused"),
        sandbox("pausing1", "pausing"),
        sandbox("pool1", "running", "pool"),
        sandbox("build1", "running", "build"),
      ],
      intervalMs: 1000,
      logger: createNoopLogger(),
      port: envd.port,
    });
    const before = nowSeconds();
    await sampler.tick();
    assert.equal(envd.calls(), 1, "paused, pausing, pool and build sandboxes are not sampled");
    assert.deepEqual(tokens, ["tok"]);
    const [got] = await s.read("run1", "team-a");
    assert.ok(got, "a sample was kept");
    // envd said ts: 1; the node's clock stamps the sample.
    assert.ok(got.time >= before && got.time <= nowSeconds(), `stamped ${got.time}, not by the node`);
    // envd's own CPU figure is not believed (gVisor has none; a sandbox could say anything).
    assert.equal(got.cpuUsedPct, 0);
    assert.equal(got.memUsed, 64 * 2 ** 20);
    assert.equal(got.diskTotal, 10 * 2 ** 30);
    assert.deepEqual(await s.read("paused1", "team-a"), []);
  } finally {
    await envd.close();
  }
});

test("CPU use comes from the sandbox's host cgroup (v1 and v2), per container, as a share of its vCPUs", async () => {
  const cgroups = await mkdtemp(path.join(root, "cgroup-"));
  const envd = await fakeEnvd((_req, res) => res.end(JSON.stringify(ENVD_BODY)));
  try {
    const v1 = path.join(cgroups, "cpuacct", "moat", "run1-c1");
    const v2 = path.join(cgroups, "moat", "run2-c1");
    await mkdir(v1, { recursive: true });
    await mkdir(v2, { recursive: true });
    await writeFile(path.join(v1, "cpuacct.usage"), "1000000000\n");
    await writeFile(path.join(v2, "cpu.stat"), "usage_usec 1000000\nuser_usec 900000\n");
    const { store: s } = store();
    const sampler = new MetricsSampler({
      store: s,
      sandboxes: () => [sandbox("run1", "running"), sandbox("run2", "running")],
      intervalMs: 1000,
      logger: createNoopLogger(),
      port: envd.port,
      cgroupRoot: cgroups,
    });
    await sampler.tick();
    const started = process.hrtime.bigint();
    // Both CPUs busy for the time between the samples (and then some: capped at 100).
    await new Promise((r) => setTimeout(r, 200));
    await writeFile(path.join(v1, "cpuacct.usage"), String(1e9 + 0.1e9));
    await writeFile(path.join(v2, "cpu.stat"), `usage_usec ${1e6 + 10e6}\n`);
    await sampler.tick();
    const elapsed = Number(process.hrtime.bigint() - started);
    const [first1, second1] = await s.read("run1", "team-a");
    const [, second2] = await s.read("run2", "team-a");
    assert.equal(first1?.cpuUsedPct, 0, "a container's first sample has nothing to compare with");
    // The sampler's own interval is within the test's: at least this share, never all.
    const expected = (0.1e9 / (elapsed * 2)) * 100;
    assert.ok(
      second1 && second1.cpuUsedPct >= expected * 0.9 && second1.cpuUsedPct < 100,
      `v1: ${second1?.cpuUsedPct}% for at least ${expected}%`,
    );
    assert.equal(second2?.cpuUsedPct, 100, "v2, capped at 100");
  } finally {
    await envd.close();
  }
  assert.equal(cpuPercentBetween({ cpuNs: 5, atNs: 0 }, { cpuNs: 1, atNs: 10 }, 1), 0, "a counter reset");
  assert.equal(cpuPercentBetween({ cpuNs: 0, atNs: 0 }, { cpuNs: 10, atNs: 10 }, 2), 50);
  assert.equal(await cgroupCpuNs("../../etc", root), undefined);
});

test("a hostile envd: a huge body, a slow answer, not JSON, an error status: no sample, no hang", async () => {
  const cases: Array<[string, (req: http.IncomingMessage, res: http.ServerResponse) => void]> = [
    [
      "huge",
      (_req, res) => {
        res.setHeader("content-type", "application/json");
        // Valid JSON past the cap: its numbers must not be believed.
        res.end(JSON.stringify({ ...ENVD_BODY, pad: "x".repeat(MAX_METRICS_BODY_BYTES * 4) }));
      },
    ],
    ["endless", (_req, res) => res.write("{")],
    ["not json", (_req, res) => res.end("<html>")],
    ["array", (_req, res) => res.end("[1,2,3]")],
    ["status", (_req, res) => res.writeHead(500).end(JSON.stringify(ENVD_BODY))],
  ];
  for (const [name, answer] of cases) {
    const envd = await fakeEnvd(answer);
    try {
      const started = Date.now();
      const body = await readEnvdMetrics("127.0.0.1", { port: envd.port, timeoutMs: 500 });
      assert.equal(body, undefined, name);
      assert.ok(Date.now() - started < 2000, `${name} took ${Date.now() - started} ms`);
    } finally {
      await envd.close();
    }
  }
  // Fields of the wrong type or sign read as 0; unknown ones are dropped.
  assert.deepEqual(toSample({ cpu_count: "2", cpu_used_pct: -3, mem_used: 1e3, evil: { a: 1 } }, 7), {
    time: 7,
    cpuCount: 0,
    cpuUsedPct: 0,
    memUsed: 1e3,
    memTotal: 0,
    memCache: 0,
    diskUsed: 0,
    diskTotal: 0,
  });
});
