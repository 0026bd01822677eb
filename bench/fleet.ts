/**
 * The fleet beside one box, in the same run: three orchestrator nodes (each in a network namespace
 * of its own), two APIs and two client proxies (tests/integration/helpers/fleet.ts) against a
 * single `moat up`, with the unmodified SDK. TTI (create → first `commands.run` returns) one at a
 * time and 30 at once, the command round trip (the client proxy → node proxy hop is the
 * difference), and how evenly 30 creates spread over the nodes.
 *
 * All three nodes share this machine's two cores, and so does everything else on it: the figures
 * are overheads of the fleet's extra hops, not its throughput.
 *
 * Without the routing part (node proxies, Redis catalog) a proxy outside the hosts reaches no
 * sandbox: TTI is then the create alone on both sides, and the hop is not measured.
 */
import { RateLimitError, Sandbox, type SandboxOpts } from "e2b";
import { type Fleet, fleetFeatures, startFleet } from "../tests/integration/helpers/fleet.js";
import type { RunningMoat } from "../tests/integration/helpers/moat-up.js";
import { withMoat } from "./platform.js";
import { BENCH_QUOTAS } from "./quotas.js";
import type { Figure } from "./report.js";
import { sample, summarize } from "./stats.js";

const SEQUENTIAL = 10;
const CONCURRENT = 30;
const ROUND_TRIPS = 50;
const SHARED_CORES =
  "three nodes, two APIs and two proxies share this machine's two cores: overheads, not throughput";

interface Side {
  sequential: number[];
  concurrent: number[];
  roundTrips: number[];
  /** Sandboxes per node after the concurrent creates (the fleet only). */
  spread?: number[];
  /** Concurrent creates that failed. */
  failures: string[];
}

/** One TTI: create, then (with `command`) the first command; the sandbox is killed after. */
async function tti(opts: SandboxOpts, command: boolean): Promise<{ ms: number; sandbox: Sandbox }> {
  const started = performance.now();
  // A 429 (no node can start one now) is retried after 100 ms inside the measured time, as in
  // the platform suite.
  for (let refused = 0; ; refused++) {
    try {
      const sandbox = await Sandbox.create("base", opts);
      if (command) await sandbox.commands.run("true");
      return { ms: performance.now() - started, sandbox };
    } catch (err) {
      if (!(err instanceof RateLimitError) || refused >= 100) throw err;
      await new Promise((r) => setTimeout(r, 100));
    }
  }
}

async function measure(
  optsFor: (i: number) => SandboxOpts,
  command: boolean,
  spread?: () => Promise<number[]>,
): Promise<Side> {
  const sequential: number[] = [];
  await (await tti(optsFor(0), command)).sandbox.kill();
  for (let i = 0; i < SEQUENTIAL; i++) {
    const { ms, sandbox } = await tti(optsFor(i), command);
    sequential.push(ms);
    await sandbox.kill();
  }
  // A create that fails (not a 429) is counted and left out, so one does not lose the run.
  const settled = await Promise.allSettled(
    Array.from({ length: CONCURRENT }, (_, i) => tti(optsFor(i), command)),
  );
  const results = settled.flatMap((r) => (r.status === "fulfilled" ? [r.value] : []));
  const failures = settled.flatMap((r) => (r.status === "rejected" ? [errorLine(r.reason)] : []));
  const counts = spread ? await spread() : undefined;
  await Promise.all(results.map((r) => r.sandbox.kill().catch(() => undefined)));
  // The round trips on a sandbox of their own, made once the burst has settled: one of the burst
  // may be killed by a reconcile (a create retried elsewhere leaves a copy that is reaped).
  let roundTrips: number[] = [];
  if (command) {
    const { sandbox } = await tti(optsFor(0), command);
    try {
      roundTrips = await sample(ROUND_TRIPS, () => sandbox.commands.run("true"), 5);
    } catch (err) {
      failures.push(`round trips: ${errorLine(err)}`);
    } finally {
      await sandbox.kill().catch(() => undefined);
    }
  }
  return { sequential, concurrent: results.map((r) => r.ms), roundTrips, spread: counts, failures };
}

function errorLine(err: unknown): string {
  return (err instanceof Error ? `${err.name}: ${err.message}` : String(err)).slice(0, 200);
}

export async function benchFleet(): Promise<Figure[]> {
  const features = await fleetFeatures();
  const command = features.routing;
  const what = command
    ? "TTI (create → first command)"
    : "create (no routing part: no command through the fleet)";
  const single = await withMoat({}, (moat: RunningMoat) =>
    measure(
      () => ({
        apiKey: moat.env.E2B_API_KEY,
        apiUrl: moat.env.E2B_API_URL,
        sandboxUrl: moat.env.E2B_SANDBOX_URL,
        domain: moat.env.E2B_DOMAIN,
        requestTimeoutMs: 120_000,
      }),
      command,
    ),
  );
  let fleet: Fleet | undefined;
  let many: Side;
  try {
    fleet = await startFleet({ nodes: 3, apis: 2, proxies: 2, apiEnv: { ...BENCH_QUOTAS } });
    const f = fleet;
    many = await measure(
      (i) => f.sdk(i % 2, i % 2),
      command,
      async () => [...(await f.sandboxesByNode()).values()].map((ids) => ids.length),
    );
  } finally {
    await fleet?.close();
  }
  const spread = many.spread ?? [];
  const most = Math.max(...spread);
  const fewest = Math.min(...spread);
  const figures: Figure[] = [
    {
      name: `fleet: ${what}, one at a time`,
      unit: "ms",
      value: summarize(many.sequential),
      baseline: { name: "moat up", value: summarize(single.sequential) },
      target: { ratio: 1.1 },
      notes: [SHARED_CORES],
    },
    {
      name: `fleet: ${what}, ${CONCURRENT} at once`,
      unit: "ms",
      value: summarize(many.concurrent),
      baseline: { name: "moat up", value: summarize(single.concurrent) },
      notes: [
        `spread of the ${CONCURRENT}: ${spread.join(" / ")} per node (most/fewest ${(most / fewest).toFixed(2)}; target ≤ 1.5)`,
        ...[
          ...many.failures.map((f) => `fleet: failed: ${f}`),
          ...single.failures.map((f) => `moat up: failed: ${f}`),
        ],
        SHARED_CORES,
      ],
    },
  ];
  if (command) {
    const hop = summarize(many.roundTrips).median - summarize(single.roundTrips).median;
    figures.push({
      name: "fleet: commands.run('true') through client proxy → node proxy",
      unit: "ms",
      value: summarize(many.roundTrips),
      baseline: { name: "moat up (client proxy → sandbox)", value: summarize(single.roundTrips) },
      notes: [`the hop adds ${hop.toFixed(2)} ms at the median (target ≤ 2 ms)`, SHARED_CORES],
    });
  }
  return figures;
}
