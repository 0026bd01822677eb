/**
 * Bursts of creates through the official SDK against one `moat up` (its default warm pool and
 * create queue): 20 concurrent creates twice (the first finds the pool at its resting size, the
 * second comes once the first has grown it and it was refilled), then 50 at once twice the same
 * way, each counted as created or refused (the SDK's RateLimitError once its own retries of a 429
 * are spent). Beside them, in the same run, one create at a time from the same pool and template
 * snapshot: what a burst costs is the ratio.
 */
import { RateLimitError, Sandbox } from "e2b";
import type { RunningMoat } from "../tests/integration/helpers/moat-up.js";
import { kindNote, logEntries, phaseNote } from "./phases.js";
import { startKind, withMoat } from "./platform.js";
import type { Figure } from "./report.js";
import { type Summary, summarize } from "./stats.js";

const SEQUENTIAL = 10;
const BURST = 20;
const BIG_BURST = 50;
/** The default pool size of a node (MOAT_POOL_SIZE unset). */
const POOL_SIZE = "2";
/** Between bursts: the node settles (kills done) and its pool refills, grown or not… */
const SETTLE_MS = 5_000;
/** …up to this long for a pool grown by the burst before (it may be bounded lower: then this). */
const REFILL_TIMEOUT_MS = 90_000;

interface Outcome {
  ms: number;
  /** Of `ms`: until Sandbox.create returned (the rest is the first command). */
  createMs?: number;
  sandbox?: Sandbox;
  refused?: string;
  failed?: string;
}

/**
 * Create → first command returns; a create the SDK gives up on with RateLimitError is refused,
 * any other error (the SDK's own 60 s request timeout) failed.
 */
async function tti(): Promise<Outcome> {
  const started = performance.now();
  try {
    const sandbox = await Sandbox.create("base");
    const createMs = performance.now() - started;
    await sandbox.commands.run("true");
    return { ms: performance.now() - started, createMs, sandbox };
  } catch (err) {
    const ms = performance.now() - started;
    const message = err instanceof Error ? `${err.name}: ${err.message}` : String(err);
    return err instanceof RateLimitError ? { ms, refused: message } : { ms, failed: message };
  }
}

interface Burst {
  samples: number[];
  /** Sandbox.create's part of each sample. */
  creates: number[];
  refused: number;
  refusal?: string;
  failed: number;
  failure?: string;
  kinds: string[];
  phases?: string;
  wallMs: number;
}

async function burst(moat: RunningMoat, n: number): Promise<Burst> {
  const logStart = moat.log().length;
  const started = performance.now();
  const outcomes = await Promise.all(Array.from({ length: n }, () => tti()));
  const wallMs = performance.now() - started;
  const created = outcomes.filter((o) => o.sandbox);
  const kinds = await Promise.all(created.map((o) => startKind(moat, o.sandbox!.sandboxId)));
  await Promise.all(created.map((o) => o.sandbox!.kill().catch(() => undefined)));
  const refused = outcomes.filter((o) => o.refused);
  const failed = outcomes.filter((o) => o.failed);
  return {
    samples: created.map((o) => o.ms),
    creates: created.map((o) => o.createMs ?? NaN),
    refused: refused.length,
    refusal: refused[0]?.refused,
    failed: failed.length,
    failure: failed[0]?.failed,
    kinds,
    phases: phaseNote(logEntries(moat.log(), "sandbox created", logStart)),
    wallMs,
  };
}

async function sequential(moat: RunningMoat): Promise<{ samples: number[]; kinds: string[] }> {
  const samples: number[] = [];
  const kinds: string[] = [];
  for (let i = -1; i < SEQUENTIAL; i++) {
    const o = await tti();
    if (!o.sandbox) throw new Error(`a sequential create did not succeed: ${o.refused ?? o.failed}`);
    if (i >= 0) {
      samples.push(o.ms);
      kinds.push(await startKind(moat, o.sandbox.sandboxId));
    }
    await o.sandbox.kill();
    // The next one finds the pool refilled, as a lone create would.
    await new Promise((r) => setTimeout(r, 1500));
  }
  return { samples, kinds };
}

/** Where a burst's time goes, client side: the create's answer, then the first command. */
function split(b: Burst): string | undefined {
  if (b.samples.length === 0) return undefined;
  const median = (xs: number[]) => Math.round(summarize(xs).median);
  const commands = b.samples.map((ms, i) => ms - b.creates[i]!);
  return `split (medians): Sandbox.create ${median(b.creates)} ms, first command ${median(commands)} ms`;
}

const settle = () => new Promise((r) => setTimeout(r, SETTLE_MS));

/** Waits until the node said its pool holds `ready` entries (after `logStart`), or the timeout. */
async function poolRefilled(moat: RunningMoat, logStart: number, ready: number): Promise<number> {
  const started = performance.now();
  const most = () =>
    Math.max(0, ...logEntries(moat.log(), "warm pool full", logStart).map((e) => Number(e.ready) || 0));
  while (most() < ready && performance.now() - started < REFILL_TIMEOUT_MS) {
    await new Promise((r) => setTimeout(r, 200));
  }
  await settle();
  return most();
}

export async function benchBursts(): Promise<Figure[]> {
  return withMoat({ MOAT_POOL_SIZE: POOL_SIZE }, async (moat) => {
    await settle();
    const seq = await sequential(moat);
    await settle();
    let mark = moat.log().length;
    const first = await burst(moat, BURST);
    const readyForSecond = await poolRefilled(moat, mark, BURST);
    const second = await burst(moat, BURST);
    await settle();
    mark = moat.log().length;
    const big = await burst(moat, BIG_BURST);
    const readyForBig = await poolRefilled(moat, mark, BIG_BURST);
    const bigAgain = await burst(moat, BIG_BURST);

    const baseline = {
      name: `one create at a time (${SEQUENTIAL} sequential, same node, pool and snapshot; ${kindNote(seq.kinds)})`,
      value: summarize(seq.samples),
    };
    const orNaN = (xs: number[]): Summary =>
      xs.length > 0 ? summarize(xs) : { n: 0, median: NaN, p99: NaN, min: NaN, max: NaN };
    const notes = (b: Burst, n: number) =>
      [
        `${b.samples.length}/${n} created, ${b.refused} refused${b.refusal ? ` (${b.refusal.slice(0, 160)})` : ""}, ${b.failed} failed${b.failure ? ` (${b.failure.slice(0, 160)})` : ""}; whole burst ${Math.round(b.wallMs)} ms`,
        kindNote(b.kinds),
        split(b),
        b.phases,
      ].filter((l): l is string => !!l);
    /** A burst's row: every create must succeed, p99 within the target for its size. */
    const row = (name: string, b: Burst, n: number): Figure => ({
      name: `TTI: ${name}`,
      unit: "ms",
      value: orNaN(b.samples),
      baseline,
      target: { p99: n === BURST ? 1500 : 4000 },
      notes: [...notes(b, n), `target all ${n} created: ${b.samples.length === n ? "met" : "MISSED"}`],
    });
    return [
      row(`${BURST} concurrent creates, first burst (pool at its resting size ${POOL_SIZE})`, first, BURST),
      row(
        `${BURST} concurrent creates, the next burst (pool refilled after the first: ${readyForSecond} ready)`,
        second,
        BURST,
      ),
      row(`${BIG_BURST} concurrent creates on one node, first burst of that size`, big, BIG_BURST),
      row(
        `${BIG_BURST} concurrent creates on one node, the next burst (pool refilled: ${readyForBig} ready)`,
        bigAgain,
        BIG_BURST,
      ),
    ];
  });
}
