/**
 * How the fuzz tests run: one seed per test run (MOAT_FUZZ_SEED replays a failure), a number of
 * runs per property (MOAT_FUZZ_RUNS, scaled per property), and a failure message that says how to
 * replay it. Shared by the in-process API fuzzing and the fuzzing against `moat up`.
 */
import fc from "fast-check";

function envInt(name: string): number | undefined {
  const text = process.env[name];
  if (text === undefined || text === "") return undefined;
  const value = Number(text);
  if (!Number.isSafeInteger(value)) throw new Error(`${name} must be an integer, got '${text}'`);
  return value;
}

/** The seed every property of this run uses: MOAT_FUZZ_SEED, else a fresh one. */
export const FUZZ_SEED = envInt("MOAT_FUZZ_SEED") ?? (Date.now() ^ (Math.random() * 0x7fffffff)) | 0;

/** Runs per property unless a property scales it: MOAT_FUZZ_RUNS, default 100. */
export const FUZZ_RUNS = Math.max(1, envInt("MOAT_FUZZ_RUNS") ?? 100);

/** `FUZZ_RUNS` scaled by `factor`, at least 1: cheap properties run more, costly ones fewer. */
export function runs(factor = 1): number {
  return Math.max(1, Math.round(FUZZ_RUNS * factor));
}

/**
 * fc.assert with the run's seed; a failure names the property, the counterexample fast-check
 * shrank to, and the command that replays it.
 */
export async function fuzz<Ts extends [unknown, ...unknown[]]>(
  name: string,
  property: fc.IAsyncPropertyWithHooks<Ts>,
  options: { numRuns?: number } = {},
): Promise<void> {
  try {
    await fc.assert(property, {
      seed: FUZZ_SEED,
      numRuns: options.numRuns ?? FUZZ_RUNS,
      endOnFailure: false,
    });
  } catch (err) {
    const message = err instanceof Error ? err.message : String(err);
    throw new Error(
      `fuzz property '${name}' failed; replay with MOAT_FUZZ_SEED=${FUZZ_SEED} (MOAT_FUZZ_RUNS=${FUZZ_RUNS})\n${message}`,
      { cause: err },
    );
  }
}

/** Rejects with a "hang" error when `work` takes longer than `ms`. */
export async function withDeadline<T>(ms: number, what: string, work: (signal: AbortSignal) => Promise<T>) {
  const controller = new AbortController();
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(() => {
      controller.abort(new Error(`hang: ${what} took longer than ${ms} ms`));
      reject(new Error(`hang: ${what} took longer than ${ms} ms`));
    }, ms);
  });
  try {
    return await Promise.race([work(controller.signal), deadline]);
  } finally {
    clearTimeout(timer);
  }
}

/**
 * Unhandled rejections and uncaught exceptions while fuzzing: each is a crash the server's own
 * process would have died of (or logged as a bug). `take()` answers and clears them.
 */
export function watchCrashes(): { take(): string[]; stop(): void } {
  const seen: string[] = [];
  const onError = (err: unknown) => {
    seen.push(err instanceof Error ? (err.stack ?? err.message) : String(err));
  };
  process.on("unhandledRejection", onError);
  process.on("uncaughtException", onError);
  return {
    take: () => seen.splice(0),
    stop() {
      process.off("unhandledRejection", onError);
      process.off("uncaughtException", onError);
    },
  };
}
