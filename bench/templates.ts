/**
 * Template figures through the official SDK against `moat up`: the build time of a one-RUN template
 * from the base image, cold (its step not cached) and cached (the same template again), beside a
 * bare runsc start (each uncached step boots a build sandbox); and TTI (create → first command) of
 * sandboxes from the built template beside the base template's, in the same run, both restored
 * from their template snapshots (pool off).
 */
import { randomBytes } from "node:crypto";
import { Sandbox, Template } from "e2b";
import { startMoat, useMoat } from "../tests/integration/helpers/moat-up.js";
import { bareRuntimeStarts } from "./orchestrator.js";
import { BENCH_QUOTAS } from "./quotas.js";
import type { Figure } from "./report.js";
import { summarize } from "./stats.js";

const BUILDS = 5;
const TTI_SAMPLES = 15;

async function tti(template: string): Promise<number> {
  const started = performance.now();
  const sandbox = await Sandbox.create(template);
  await sandbox.commands.run("true");
  const ms = performance.now() - started;
  await sandbox.kill();
  return ms;
}

async function timed(fn: () => Promise<unknown>): Promise<number> {
  const started = performance.now();
  await fn();
  return performance.now() - started;
}

export async function benchTemplates(): Promise<Figure[]> {
  const bare = summarize(await bareRuntimeStarts(5));
  const moat = await startMoat({ env: { ...BENCH_QUOTAS, MOAT_POOL_SIZE: "0" } });
  try {
    useMoat(moat);
    const oneRun = (nonce: string) =>
      Template().fromBaseImage().runCmd(`echo ${nonce} > /home/user/bench.txt`);
    const cold: number[] = [];
    const cached: number[] = [];
    for (let i = 0; i < BUILDS; i++) {
      const nonce = randomBytes(6).toString("hex");
      cold.push(await timed(() => Template.build(oneRun(nonce), "bench-one-run", { memoryMB: 512 })));
      cached.push(await timed(() => Template.build(oneRun(nonce), "bench-one-run", { memoryMB: 512 })));
    }

    const base: number[] = [];
    const built: number[] = [];
    await tti("base");
    await tti("bench-one-run");
    for (let i = 0; i < TTI_SAMPLES; i++) {
      base.push(await tti("base"));
      built.push(await tti("bench-one-run"));
    }
    const bareStart = { name: "bare runsc start of a Node HTTP server", value: bare };
    return [
      {
        name: "template build, one RUN step, cold (Template.build → ready, snapshot included)",
        unit: "ms",
        value: summarize(cold),
        baseline: bareStart,
      },
      {
        name: "template build, one RUN step, cached (the same template again)",
        unit: "ms",
        value: summarize(cached),
        baseline: bareStart,
      },
      {
        name: "TTI from the built template (snapshot, pool off)",
        unit: "ms",
        value: summarize(built),
        baseline: {
          name: "TTI from the base template in the same run (snapshot, pool off)",
          value: summarize(base),
        },
      },
    ];
  } finally {
    await moat.cleanup();
  }
}
