/**
 * What observability costs: TTI (create → first `commands.run` returns) and the `commands.run`
 * round trip through the official SDK against `moat up`, with tracing and metrics on (OTLP to a
 * receiver on loopback, the default sampler, sandbox metrics sampled at their default interval,
 * every Prometheus endpoint moat up prints scraped each second) beside the same with them off
 * (no OTEL_* variables, MOAT_METRICS_INTERVAL=0), in the same run. The two alternate, off, on,
 * on, off, so a drift of the machine over the run weighs on both alike. Target: ≤ 3% each.
 */
import { once } from "node:events";
import { readFile } from "node:fs/promises";
import http from "node:http";
import type { AddressInfo } from "node:net";
import { RateLimitError, Sandbox } from "e2b";
import type { RunningMoat } from "../tests/integration/helpers/moat-up.js";
import { withMoat } from "./platform.js";
import type { Figure } from "./report.js";
import { sample, summarize } from "./stats.js";

/** Creates measured per moat up (after one unmeasured), and round trips. */
const CREATES = 10;
const ROUND_TRIPS = 100;
const TARGET_RATIO = 1.03;

/** An OTLP/HTTP sink on 127.0.0.1 that counts what it is sent. */
async function startSink(): Promise<{
  url: string;
  requests: number;
  bytes: number;
  close(): Promise<void>;
}> {
  const sink = {
    url: "",
    requests: 0,
    bytes: 0,
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
  const server = http.createServer((req, res) => {
    req.on("data", (c: Buffer) => {
      sink.bytes += c.length;
    });
    req.on("end", () => {
      sink.requests++;
      res.writeHead(200, { "content-type": "application/x-protobuf" }).end();
    });
  });
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  sink.url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  return sink;
}

/**
 * Scrapes every `/metrics` URL of moat up's "Prometheus:" line once a second, as a Prometheus
 * would, until stopped; counts scrapes and failures.
 */
function scrapeEverySecond(moat: RunningMoat): {
  stop(): { scrapes: number; failures: number; urls: string[] };
} {
  const line = moat
    .log()
    .split("\n")
    .find((l) => l.startsWith("Prometheus:"));
  const urls = [...new Set(line?.match(/https?:\/\/[^\s,]+\/metrics\b/g) ?? [])];
  const token = process.env.MOAT_METRICS_TOKEN || moat.env.MOAT_ADMIN_TOKEN;
  let scrapes = 0;
  let failures = 0;
  const timer = setInterval(() => {
    for (const url of urls) {
      fetch(url, { headers: { authorization: `Bearer ${token}` }, signal: AbortSignal.timeout(5000) })
        .then(async (res) => {
          await res.arrayBuffer();
          if (res.ok) scrapes++;
          else failures++;
        })
        .catch(() => failures++);
    }
  }, 1000);
  return {
    stop() {
      clearInterval(timer);
      return { scrapes, failures, urls };
    },
  };
}

/** Create → first command returns; a 429 (node busy) is retried within the measured time. */
async function tti(): Promise<{ ms: number; sandbox: Sandbox }> {
  const started = performance.now();
  for (let refused = 0; ; refused++) {
    try {
      const sandbox = await Sandbox.create("base");
      await sandbox.commands.run("true");
      return { ms: performance.now() - started, sandbox };
    } catch (err) {
      if (!(err instanceof RateLimitError) || refused >= 50) throw err;
      await new Promise((r) => setTimeout(r, 100));
    }
  }
}

interface Round {
  tti: number[];
  run: number[];
  /** moat up's own CPU time (user + system) per create and per round trip, in ms. */
  cpuPerCreate: number;
  cpuPerRun: number;
}

/**
 * CPU time a process has used, in ms: less bent by other work on a busy machine than wall time,
 * and what tracing and metrics add to moat's process.
 */
async function cpuMs(pid: number): Promise<number> {
  const stat = await readFile(`/proc/${pid}/stat`, "utf8");
  // Fields after the command name (which may hold spaces), from the 3rd: utime is the 14th, stime the 15th.
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return ((Number(fields[11]) + Number(fields[12])) * 1000) / CLOCK_TICKS;
}
const CLOCK_TICKS = 100;

async function round(moat: RunningMoat): Promise<Round> {
  const pid = moat.child.pid!;
  const ttis: number[] = [];
  let cpu = 0;
  for (let i = -1; i < CREATES; i++) {
    if (i === 0) cpu = await cpuMs(pid);
    const { ms, sandbox } = await tti();
    if (i >= 0) ttis.push(ms);
    await sandbox.kill();
  }
  const cpuPerCreate = ((await cpuMs(pid)) - cpu) / CREATES;
  const sbx = await Sandbox.create("base");
  try {
    for (let i = 0; i < 5; i++) await sbx.commands.run("true");
    cpu = await cpuMs(pid);
    const run = await sample(ROUND_TRIPS, () => sbx.commands.run("true"), 0);
    const cpuPerRun = ((await cpuMs(pid)) - cpu) / ROUND_TRIPS;
    return { tti: ttis, run, cpuPerCreate, cpuPerRun };
  } finally {
    await sbx.kill();
  }
}

export async function benchTelemetry(): Promise<Figure[]> {
  const sink = await startSink();
  const off = {
    tti: [] as number[],
    run: [] as number[],
    cpuPerCreate: [] as number[],
    cpuPerRun: [] as number[],
  };
  const on = {
    tti: [] as number[],
    run: [] as number[],
    cpuPerCreate: [] as number[],
    cpuPerRun: [] as number[],
  };
  const notes: string[] = [];
  try {
    for (const tracing of [false, true, true, false]) {
      const env: Record<string, string> = tracing
        ? { OTEL_EXPORTER_OTLP_ENDPOINT: sink.url, OTEL_SERVICE_NAME: "moat-bench" }
        : { MOAT_METRICS_INTERVAL: "0", OTEL_SDK_DISABLED: "true" };
      const before = { requests: sink.requests, bytes: sink.bytes };
      await withMoat({ MOAT_POOL_SIZE: "0", ...env }, async (moat) => {
        const scraper = tracing ? scrapeEverySecond(moat) : undefined;
        try {
          const r = await round(moat);
          const into = tracing ? on : off;
          into.tti.push(...r.tti);
          into.run.push(...r.run);
          into.cpuPerCreate.push(r.cpuPerCreate);
          into.cpuPerRun.push(r.cpuPerRun);
        } finally {
          const scraped = scraper?.stop();
          if (scraped) {
            notes.push(
              `on: ${scraped.scrapes} scrapes of ${scraped.urls.length} endpoint(s) (${scraped.urls.join(", ")}), ${scraped.failures} failed`,
            );
          }
        }
      });
      if (tracing) {
        notes.push(
          `on: ${sink.requests - before.requests} OTLP exports, ${Math.round((sink.bytes - before.bytes) / 1024)} KiB`,
        );
      } else if (sink.requests !== before.requests) {
        throw new Error("moat up sent traces with tracing off");
      }
    }
  } finally {
    await sink.close();
  }
  const offName = "off (no OTEL_*, MOAT_METRICS_INTERVAL=0)";
  const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
  const cpu = (what: string, key: "cpuPerCreate" | "cpuPerRun") =>
    `moat up's CPU per ${what}: on ${mean(on[key]).toFixed(1)} ms, off ${mean(off[key]).toFixed(1)} ms (ratio ${(mean(on[key]) / mean(off[key])).toFixed(2)}x; rounds on ${on[key].map((x) => x.toFixed(1)).join(", ")}, off ${off[key].map((x) => x.toFixed(1)).join(", ")})`;
  return [
    {
      name: "TTI with tracing + metrics on",
      unit: "ms",
      value: summarize(on.tti),
      baseline: { name: offName, value: summarize(off.tti) },
      target: { ratio: TARGET_RATIO },
      notes: [cpu("create", "cpuPerCreate"), ...notes],
    },
    {
      name: "commands.run round trip with tracing + metrics on",
      unit: "ms",
      value: summarize(on.run),
      baseline: { name: offName, value: summarize(off.run) },
      target: { ratio: TARGET_RATIO },
      notes: [cpu("round trip", "cpuPerRun")],
    },
  ];
}
