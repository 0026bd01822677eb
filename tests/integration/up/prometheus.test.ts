/**
 * Prometheus scraping `moat up`: Debian's real `prometheus` server, on loopback with a temporary
 * storage directory, scrapes the API, the client proxy and the orchestrator every second with the
 * metrics token; the test reads the series back through Prometheus's HTTP API. Also: /metrics
 * answers nobody without the token, and a sandbox reaches none of the endpoints.
 */
import assert from "node:assert/strict";
import { type ChildProcess, execFile, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { once } from "node:events";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import { promisify } from "node:util";
import { Sandbox } from "e2b";
import { releasesDone } from "../helpers/host-state.js";
import { type RunningMoat, startMoat, useMoat } from "../helpers/moat-up.js";
import { freePort } from "../helpers/orchestrator.js";

const TOKEN = randomBytes(24).toString("hex");
const JOBS = ["moat-api", "moat-proxy", "moat-orchestrator"] as const;

/** Polls `check` (every 250 ms) until it holds; the error says what was awaited. */
async function waitFor(check: () => Promise<boolean>, what: string, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check().catch(() => false))) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 250));
  }
}

interface VectorSample {
  metric: Record<string, string>;
  value: [number, string];
}

describe("moat up scraped by Prometheus", { timeout: 300_000 }, () => {
  let moat: RunningMoat;
  let prometheus: ChildProcess | undefined;
  let prometheusLog = "";
  let promURL: string;
  let workDir: string;
  let sbx: Sandbox | undefined;
  let endpoints: Record<(typeof JOBS)[number], string>;

  /** An instant query's samples. */
  async function query(expr: string): Promise<VectorSample[]> {
    const res = await fetch(`${promURL}/api/v1/query?query=${encodeURIComponent(expr)}`);
    const body = (await res.json()) as { status: string; data?: { result: VectorSample[] }; error?: string };
    assert.equal(body.status, "success", `${expr}: ${body.error}`);
    return body.data!.result;
  }

  /** Waits until `expr` has a sample passing `ok`; returns that sample's value. */
  async function waitForSample(expr: string, ok: (value: number) => boolean, what: string): Promise<number> {
    let found: number | undefined;
    await waitFor(
      async () => {
        const samples = await query(expr);
        found = samples.map((s) => Number(s.value[1])).find(ok);
        return found !== undefined;
      },
      `${what} (${expr}) in Prometheus`,
      60_000,
    ).catch((err: Error) => {
      throw new Error(`${err.message}; prometheus said: ${prometheusLog.slice(-2000)}`);
    });
    return found!;
  }

  before(async () => {
    // On every address, as a server scraped from elsewhere runs: the sandboxes' host links too.
    moat = await startMoat({ env: { MOAT_METRICS_TOKEN: TOKEN }, host: "0.0.0.0" });
    useMoat(moat);
    endpoints = {
      "moat-api": `127.0.0.1:${new URL(moat.env.E2B_API_URL!).port}`,
      "moat-proxy": `127.0.0.1:${new URL(moat.env.E2B_SANDBOX_URL!).port}`,
      "moat-orchestrator": `127.0.0.1:${moat.orchestratorMetricsPort}`,
    };
    workDir = await mkdtemp(path.join(tmpdir(), "moat-prometheus-"));
    // The token in a file of its own, as docs/observability.md shows.
    await writeFile(path.join(workDir, "metrics-token"), TOKEN, { mode: 0o600 });
    const config = [
      "global:",
      "  scrape_interval: 1s",
      "  scrape_timeout: 1s",
      "scrape_configs:",
      ...JOBS.flatMap((job) => [
        `  - job_name: ${job}`,
        "    authorization:",
        `      credentials_file: ${path.join(workDir, "metrics-token")}`,
        "    static_configs:",
        `      - targets: ["${endpoints[job]}"]`,
      ]),
      "",
    ].join("\n");
    await writeFile(path.join(workDir, "prometheus.yml"), config);
    const port = await freePort();
    promURL = `http://127.0.0.1:${port}`;
    prometheus = spawn(
      "prometheus",
      [
        `--config.file=${path.join(workDir, "prometheus.yml")}`,
        `--storage.tsdb.path=${path.join(workDir, "data")}`,
        `--web.listen-address=127.0.0.1:${port}`,
      ],
      { stdio: ["ignore", "pipe", "pipe"] },
    );
    const collect = (chunk: Buffer) => {
      prometheusLog += chunk.toString();
    };
    prometheus.stdout!.on("data", collect);
    prometheus.stderr!.on("data", collect);
    await waitFor(
      async () => (await fetch(`${promURL}/-/ready`).catch(() => undefined))?.status === 200,
      "prometheus to be ready",
      30_000,
    ).catch((err: Error) => {
      throw new Error(`${err.message}; prometheus said: ${prometheusLog.slice(-2000)}`);
    });
  });

  after(async () => {
    await sbx?.kill().catch(() => undefined);
    if (prometheus && prometheus.exitCode === null) {
      prometheus.kill("SIGTERM");
      await once(prometheus, "exit");
    }
    if (workDir) await rm(workDir, { recursive: true, force: true });
    await moat?.cleanup();
  });

  test("every component is scraped with the token", async (t) => {
    for (const job of JOBS) await waitForSample(`up{job="${job}"}`, (v) => v === 1, `${job} up`);
    const targets = (await (await fetch(`${promURL}/api/v1/targets`)).json()) as {
      data: { activeTargets: Array<{ labels: { job: string }; health: string; lastError: string }> };
    };
    for (const target of targets.data.activeTargets)
      assert.equal(target.health, "up", `${target.labels.job}: ${target.lastError}`);
    // What a scrape costs and how many series each page has, for the record.
    for (const metric of ["scrape_duration_seconds", "scrape_samples_scraped"]) {
      const samples = await query(metric);
      t.diagnostic(`${metric}: ${samples.map((s) => `${s.metric.job}=${s.value[1]}`).join(" ")}`);
    }
  });

  test("sandboxes by state, operation histograms and per-sandbox CPU of a created sandbox", async () => {
    sbx = await Sandbox.create("base", { timeoutMs: 120_000 });
    const id = sbx.sandboxId;
    // Two seconds of CPU in the sandbox, through the client proxy.
    const burn = await sbx.commands.run("timeout 2 sh -c 'while :; do :; done'; true");
    assert.equal(burn.exitCode, 0);
    await waitForSample('moat_orchestrator_sandboxes{state="running"}', (v) => v >= 1, "running sandboxes");
    await waitForSample('moat_api_sandboxes{state="running"}', (v) => v >= 1, "the API's running sandboxes");
    await waitForSample(
      "sum(moat_orchestrator_create_duration_seconds_count)",
      (v) => v >= 1,
      "the create histogram's count",
    );
    await waitForSample(
      `moat_sandbox_cpu_seconds_total{sandbox_id="${id}"}`,
      (v) => v >= 1,
      "the burn's CPU",
    );
    await waitForSample(
      `moat_sandbox_memory_bytes{sandbox_id="${id}"}`,
      (v) => v > 0,
      "the sandbox's memory",
    );
    await waitForSample(
      'sum(moat_proxy_requests_total{status="200"})',
      (v) => v >= 1,
      "the proxy's requests",
    );
    await waitForSample("moat_node_cpus", (v) => v >= 1, "the node's CPUs");
    await waitForSample('moat_node_disk_bytes{kind="total"}', (v) => v > 0, "the node's disk");

    // A pause and a resume from memory: both timed, the restore too.
    await sbx.pause();
    await waitForSample('moat_orchestrator_sandboxes{state="paused"}', (v) => v === 1, "the paused sandbox");
    sbx = await Sandbox.connect(id);
    await waitForSample("sum(moat_orchestrator_pause_duration_seconds_count)", (v) => v >= 1, "pauses");
    await waitForSample(
      'moat_orchestrator_resume_duration_seconds_count{from="memory"}',
      (v) => v >= 1,
      "resumes from memory",
    );
    await waitForSample(
      'moat_orchestrator_restore_duration_seconds_count{for="resume"}',
      (v) => v >= 1,
      "restores",
    );

    // A killed sandbox's series go from the node's page, and so from Prometheus.
    await sbx.kill();
    sbx = undefined;
    const page = await (
      await fetch(`http://${endpoints["moat-orchestrator"]}/metrics`, {
        headers: { authorization: `Bearer ${TOKEN}` },
      })
    ).text();
    assert.doesNotMatch(page, new RegExp(`sandbox_id="${id}"`));
    await waitFor(
      async () => (await query(`moat_sandbox_cpu_seconds_total{sandbox_id="${id}"}`)).length === 0,
      "the killed sandbox's series to go stale",
      30_000,
    );
  });

  test("no component's /metrics answers without the token, or with another", async () => {
    for (const job of JOBS) {
      for (const headers of [
        {},
        { authorization: "Bearer not-the-token-0123456789" },
        { authorization: TOKEN },
      ]) {
        const res = await fetch(`http://${endpoints[job]}/metrics`, { headers });
        assert.equal(res.status, 401, `${job} ${JSON.stringify(headers)}`);
        assert.doesNotMatch(await res.text(), /moat_/, `${job}: no metric in the refusal`);
      }
    }
  });

  test("a sandbox reaches none of the endpoints: not on its loopback, its gateway or its host link", async (t) => {
    sbx = await Sandbox.create("base", { timeoutMs: 120_000 });
    // The sandbox the test before killed is released after its kill answered: its link goes away
    // then, and a read from its address would hang until TCP gives up.
    await releasesDone(moat.dataDir);
    const hostLinks = await hostLinkAddresses();
    assert.ok(hostLinks.length >= 1, "the sandbox's host-side link has an address");
    // The endpoints do listen there: what stops the sandbox below is its boundary, not a closed port.
    for (const address of hostLinks) {
      const res = await fetch(`http://${address}:${moat.orchestratorMetricsPort}/metrics`, {
        headers: { authorization: `Bearer ${TOKEN}` },
        signal: AbortSignal.timeout(10_000),
      });
      assert.equal(res.status, 200, `the host reads ${address}`);
    }
    const ports = Object.values(endpoints).map((e) => Number(e.split(":").at(-1)));
    const targets = ["127.0.0.1", "169.254.0.22", ...hostLinks].flatMap((a) => ports.map((p) => `${a}:${p}`));
    const script = `
import json, sys, threading, urllib.request
out = {}
def scrape(target):
    try:
        with urllib.request.urlopen(f"http://{target}/metrics", timeout=3) as r:
            out[target] = "read " + r.read(200).decode(errors="replace")
    except urllib.error.HTTPError as e:
        out[target] = f"status {e.code}"
    except Exception as e:
        out[target] = "error " + type(e).__name__
threads = [threading.Thread(target=scrape, args=(t,)) for t in sys.argv[1:]]
[t.start() for t in threads]
[t.join() for t in threads]
print(json.dumps(out))
`;
    await sbx.files.write("/tmp/scrape.py", script);
    // The probe works: envd answers on the sandbox's own loopback (its /metrics needs envd's token).
    const control = await sbx.commands.run("python3 /tmp/scrape.py 127.0.0.1:49983");
    assert.match(control.stdout, /"127\.0\.0\.1:49983": "(status|read) /, control.stdout);
    const r = await sbx.commands.run(`python3 /tmp/scrape.py ${targets.join(" ")}`, { timeoutMs: 120_000 });
    const results = JSON.parse(r.stdout) as Record<string, string>;
    t.diagnostic(`from inside the sandbox: ${JSON.stringify(results)}`);
    for (const target of targets)
      assert.match(results[target] ?? "", /^error /, `${target}: ${results[target]}`);
    await sbx.kill();
    sbx = undefined;
  });
});

/** IPv4 addresses of the root-namespace ends of the sandboxes' links (moat-v<slot>). */
async function hostLinkAddresses(): Promise<string[]> {
  const { stdout } = await promisify(execFile)("ip", ["-j", "-4", "addr", "show"]);
  const links = JSON.parse(stdout) as Array<{ ifname: string; addr_info: Array<{ local: string }> }>;
  return links.filter((l) => l.ifname.startsWith("moat-v")).flatMap((l) => l.addr_info.map((a) => a.local));
}
