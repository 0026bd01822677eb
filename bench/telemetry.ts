/**
 * What observability costs: TTI (create → first `commands.run` returns) and the `commands.run`
 * round trip through the official SDK against `moat up`, with tracing and metrics on (OTLP to a
 * receiver on loopback, the default sampler, sandbox metrics sampled at their default interval,
 * every Prometheus endpoint moat up prints scraped each second) beside the same with them off
 * (no OTEL_* variables, MOAT_METRICS_INTERVAL=0), in the same run. The two alternate, off, on,
 * on, off, so a drift of the machine over the run weighs on both alike. Target: ≤ 3% each.
 */
import { once } from "node:events";
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
}

async function round(): Promise<Round> {
  const ttis: number[] = [];
  for (let i = -1; i < CREATES; i++) {
    const { ms, sandbox } = await tti();
    if (i >= 0) ttis.push(ms);
    await sandbox.kill();
  }
  const sbx = await Sandbox.create("base");
  try {
    const run = await sample(ROUND_TRIPS, () => sbx.commands.run("true"), 5);
    return { tti: ttis, run };
  } finally {
    await sbx.kill();
  }
}

export async function benchTelemetry(): Promise<Figure[]> {
  const sink = await startSink();
  const off = { tti: [] as number[], run: [] as number[] };
  const on = { tti: [] as number[], run: [] as number[] };
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
          const r = await round();
          const into = tracing ? on : off;
          into.tti.push(...r.tti);
          into.run.push(...r.run);
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
  return [
    {
      name: "TTI with tracing + metrics on",
      unit: "ms",
      value: summarize(on.tti),
      baseline: { name: offName, value: summarize(off.tti) },
      target: { ratio: TARGET_RATIO },
      notes,
    },
    {
      name: "commands.run round trip with tracing + metrics on",
      unit: "ms",
      value: summarize(on.run),
      baseline: { name: offName, value: summarize(off.run) },
      target: { ratio: TARGET_RATIO },
    },
  ];
}
