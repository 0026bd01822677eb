/**
 * The claim and resume paths through the official SDK against `moat up`: create from the warm
 * pool → first `commands.run("true")` returns (TTI), beside a bare `runsc do /bin/true` measured
 * in the same run; and resume through the API (`Sandbox.connect` of a paused sandbox → first
 * command), beside the same sandbox's `commands.run("true")` while it runs. Each figure says
 * where the time went: the SDK's create (or connect) call and the first command apart, and the
 * node's phases.
 */
import { execFile } from "node:child_process";
import { writeFile } from "node:fs/promises";
import path from "node:path";
import { promisify } from "node:util";
import { ensureRunsc } from "@moat/orchestrator";
import { createNoopLogger } from "@moat/shared";
import { Sandbox } from "e2b";
import { makeDataDir, removeDataDir } from "../tests/integration/helpers/orchestrator.js";
import { logEntries, phaseNote } from "./phases.js";
import { poolFull, withMoat } from "./platform.js";
import type { Figure } from "./report.js";
import { sample, summarize } from "./stats.js";

const execFileAsync = promisify(execFile);
const CREATES = Number(process.env.MOAT_BENCH_CLAIM_CREATES ?? 20);
const RESUMES = Number(process.env.MOAT_BENCH_CLAIM_RESUMES ?? 10);
const BARE_RUNS = 10;
const POOL_SIZE = 2;

/**
 * `runsc do /bin/true` with the node's runsc binary and platform: the bare runtime's floor. With
 * `--network=none`: `do` with a network of its own sets up a veth per run (~1 s here), which no
 * sandbox start pays.
 */
async function bareRunscDo(runs: number): Promise<number[]> {
  const dataDir = await makeDataDir();
  const root = path.join(dataDir, "runsc-do");
  try {
    const install = await ensureRunsc({ dataDir, logger: createNoopLogger() });
    return await sample(
      runs,
      () =>
        execFileAsync(install.path, [
          "--root",
          root,
          `--platform=${install.platform}`,
          "--network=none",
          "do",
          "/bin/true",
        ]),
      1,
    );
  } finally {
    await removeDataDir(dataDir);
  }
}

const median = (xs: number[]) => summarize(xs).median;

/** A two-step operation's samples: the whole, and each step (a create or connect, then a command). */
class Split {
  readonly whole: number[] = [];
  readonly first: number[] = [];
  readonly second: number[] = [];

  /** Runs `first` then `second` on its result; records the times when `keep`. */
  async time<T>(first: () => Promise<T>, second: (t: T) => Promise<unknown>, keep: boolean): Promise<T> {
    const started = performance.now();
    const value = await first();
    const between = performance.now();
    await second(value);
    const done = performance.now();
    if (keep) {
      this.whole.push(done - started);
      this.first.push(between - started);
      this.second.push(done - between);
    }
    return value;
  }

  note(firstName: string): string {
    return `split (medians): ${firstName} ${ms(median(this.first))} ms, first command ${ms(median(this.second))} ms`;
  }
}
const ms = (x: number) => x.toFixed(0);

export async function benchClaim(): Promise<Figure[]> {
  const bare = summarize(await bareRunscDo(BARE_RUNS));
  const baselineDo = {
    name: "bare `runsc do /bin/true` (same runsc binary and platform, --network=none)",
    value: bare,
  };

  // At debug: every refill says "warm pool full" (at info only the first does).
  return withMoat({ MOAT_POOL_SIZE: String(POOL_SIZE), MOAT_LOG_LEVEL: "debug" }, async (moat) => {
    // TTI from the pool: each create waits (untimed) until the pool is full again.
    const tti = new Split();
    let misses = 0;
    let fills = 1;
    let logStart = 0;
    console.error(`  ${CREATES} creates from the pool`);
    for (let i = -2; i < CREATES; i++) {
      if (!(await poolFull(moat, fills))) misses++;
      fills++;
      if (i === 0) logStart = moat.log().length;
      const sbx = await tti.time(
        () => Sandbox.create("base"),
        (s) => s.commands.run("true"),
        i >= 0,
      );
      await sbx.kill();
    }
    const createPhases = phaseNote(logEntries(moat.log(), "sandbox created", logStart));

    // Resume: one sandbox paused and connected again; its running round trip is the baseline.
    console.error(`  ${RESUMES} pause and connect cycles`);
    const sbx = await Sandbox.create("base");
    const running = await sample(30, () => sbx.commands.run("true"));
    const resume = new Split();
    logStart = moat.log().length;
    try {
      for (let i = -2; i < RESUMES; i++) {
        if (i === 0) logStart = moat.log().length;
        await sbx.pause();
        await resume.time(
          () => Sandbox.connect(sbx.sandboxId),
          (s) => s.commands.run("true"),
          i >= 0,
        );
      }
    } finally {
      await Sandbox.kill(sbx.sandboxId).catch(() => undefined);
    }
    const resumePhases = phaseNote(logEntries(moat.log(), "sandbox resumed", logStart));
    // For a closer look (with OTEL_TRACES_EXPORTER=console, the API's spans are in it too).
    if (process.env.MOAT_BENCH_CLAIM_LOG) await writeFile(process.env.MOAT_BENCH_CLAIM_LOG, moat.log());

    return [
      {
        name: `TTI from the warm pool: Sandbox.create → first commands.run("true") returns (${CREATES} sequential, pool ${POOL_SIZE} full before each)`,
        unit: "ms",
        value: summarize(tti.whole),
        baseline: baselineDo,
        target: { median: 50, p99: 150, ratio: 0.3 },
        notes: [
          tti.note("Sandbox.create"),
          ...(createPhases ? [createPhases] : []),
          ...(misses > 0 ? [`${misses} creates went ahead before the pool was full again`] : []),
        ],
      },
      {
        name: `resume through the API: Sandbox.connect(id) of a paused sandbox → first commands.run("true") returns (${RESUMES} cycles)`,
        unit: "ms",
        value: summarize(resume.whole),
        baseline: {
          name: 'the same sandbox\'s commands.run("true") while it runs',
          value: summarize(running),
        },
        target: { median: 300 },
        notes: [resume.note("Sandbox.connect"), ...(resumePhases ? [resumePhases] : [])],
      },
    ];
  });
}
