/**
 * Code-interpreter figures with the unmodified `@e2b/code-interpreter` SDK against `moat up`:
 * `runCode("1+1")` round trip beside `commands.run("true")` in the same sandbox; create → first
 * runCode result from the warm pool and from the template snapshot (pool off), each beside the
 * base template's TTI (create → first command) measured the same way in the same run; and the
 * memory of an idle code-interpreter sandbox beside an idle base sandbox (PSS of its host
 * processes).
 */
import { Sandbox } from "@e2b/code-interpreter";
import { waitFor } from "../tests/integration/helpers/counter.js";
import { type RunningMoat, startMoat, useMoat } from "../tests/integration/helpers/moat-up.js";
import { containerPSS } from "./orchestrator.js";
import { BENCH_QUOTAS } from "./quotas.js";
import type { Figure } from "./report.js";
import { summarize } from "./stats.js";

const ROUND_TRIPS = 50;
const CREATES = 10;
const IDLE = 3;
const CODE_INTERPRETER = "code-interpreter-v1";

async function timed(fn: () => Promise<unknown>): Promise<number> {
  const started = performance.now();
  await fn();
  return performance.now() - started;
}

/** create → first result, then kill; `poolFills` waits for the pool to refill between samples. */
async function createToFirst(
  moat: RunningMoat,
  template: string,
  first: (sbx: Sandbox) => Promise<unknown>,
  pooled: boolean,
): Promise<number[]> {
  const fills = () => moat.log().split("warm pool full").length - 1;
  const samples: number[] = [];
  for (let i = 0; i < CREATES; i++) {
    const before = fills();
    let sbx: Sandbox | undefined;
    samples.push(
      await timed(async () => {
        sbx = await Sandbox.create(template);
        await first(sbx);
      }),
    );
    await sbx!.kill();
    if (pooled) await waitFor(() => fills() > before, "the warm pool to refill", 120_000);
  }
  return samples;
}

const firstCode = async (sbx: Sandbox) => {
  const ex = await sbx.runCode("1+1");
  if (ex.text !== "2") throw new Error(`runCode("1+1") gave ${JSON.stringify(ex.toJSON())}`);
};
const firstCommand = (sbx: Sandbox) => sbx.commands.run("true");

export async function benchCodeInterpreter(): Promise<Figure[]> {
  // Debug: every refill says "warm pool full" (at info only the first does).
  const moat = await startMoat({
    codeInterpreter: true,
    env: { ...BENCH_QUOTAS, MOAT_POOL_SIZE: "1", MOAT_LOG_LEVEL: "debug" },
  });
  try {
    useMoat(moat);
    // Both pools (base and code-interpreter) full.
    await waitFor(() => moat.log().split("warm pool full").length - 1 >= 2, "both warm pools", 300_000);

    const sbx = await Sandbox.create(CODE_INTERPRETER);
    await sbx.runCode("1+1");
    await sbx.commands.run("true");
    const runCode: number[] = [];
    const command: number[] = [];
    for (let i = 0; i < ROUND_TRIPS; i++) {
      runCode.push(await timed(() => sbx.runCode("1+1")));
      command.push(await timed(() => sbx.commands.run("true")));
    }
    await sbx.kill();

    const fromPool = await createToFirst(moat, CODE_INTERPRETER, firstCode, true);
    const basePool = await createToFirst(moat, "base", firstCommand, true);

    // Idle memory, after a first execution (what an agent's sandbox holds between calls).
    const idle = await Promise.all(Array.from({ length: IDLE }, () => Sandbox.create(CODE_INTERPRETER)));
    for (const s of idle) await s.runCode("1+1");
    const idleBase = await Promise.all(Array.from({ length: IDLE }, () => Sandbox.create("base")));
    for (const s of idleBase) await s.commands.run("true");
    await new Promise((r) => setTimeout(r, 5_000));
    const pss = await Promise.all(idle.map((s) => containerPSS(s.sandboxId)));
    const pssBase = await Promise.all(idleBase.map((s) => containerPSS(s.sandboxId)));
    await Promise.all([...idle, ...idleBase].map((s) => s.kill()));

    await moat.restart({ env: { MOAT_POOL_SIZE: "0" } });
    useMoat(moat);
    const fromSnapshot = await createToFirst(moat, CODE_INTERPRETER, firstCode, false);
    const baseSnapshot = await createToFirst(moat, "base", firstCommand, false);

    const mb = (bytes: number[]) => summarize(bytes.map((b) => b / 2 ** 20));
    return [
      {
        name: 'code interpreter runCode("1+1") round trip',
        unit: "ms",
        value: summarize(runCode),
        baseline: { name: 'commands.run("true") in the same sandbox', value: summarize(command) },
        target: { median: 30 },
      },
      {
        name: "code interpreter create → first runCode result, from the warm pool",
        unit: "ms",
        value: summarize(fromPool),
        baseline: { name: "base template TTI from the warm pool, same run", value: summarize(basePool) },
        target: { median: 250 },
      },
      {
        name: "code interpreter create → first runCode result, from the snapshot (pool off)",
        unit: "ms",
        value: summarize(fromSnapshot),
        baseline: { name: "base template TTI from the snapshot, same run", value: summarize(baseSnapshot) },
      },
      {
        name: `memory of an idle code-interpreter sandbox, PSS of its host processes (N=${IDLE})`,
        unit: "MB",
        value: mb(pss),
        baseline: { name: "an idle base sandbox, same run", value: mb(pssBase) },
      },
    ];
  } finally {
    await moat.cleanup();
  }
}
