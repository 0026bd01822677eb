/**
 * `npm run bench`: every figure of the targets table in design.md, each beside a baseline measured
 * in the same run. Prints medians, p99s and ratios, and writes them as JSON to .bench/results.json.
 * `npm run bench -- envd` runs only the suites whose name matches; `--name=value` arguments are the
 * suites' options. The soak (20 minutes) runs only when named: `npm run bench -- soak`, and so does
 * the density run (`npm run bench -- density --n=200`).
 * Benches hold the host-wide integration-test lock: one orchestrator per host owns the sandbox
 * networks, so a bench waits for a test run (and the other way round).
 */
import { spawnSync } from "node:child_process";
import { mkdir, writeFile } from "node:fs/promises";
import path from "node:path";
import { benchArtifacts } from "./artifacts.js";
import { benchBursts } from "./bursts.js";
import { benchClaim } from "./claim.js";
import { benchCodeInterpreter } from "./code-interpreter.js";
import { benchDashboard } from "./dashboard.js";
import { benchDensity } from "./density.js";
import { benchEgress } from "./egress.js";
import { benchEnvd } from "./envd.js";
import { benchFleet } from "./fleet.js";
import { benchFork } from "./fork.js";
import { benchIO } from "./io.js";
import { benchKill } from "./kill.js";
import { benchNodeProxy } from "./node-proxy.js";
import { benchOrchestrator } from "./orchestrator.js";
import { benchPlatform } from "./platform.js";
import { benchRelocate } from "./relocate.js";
import { type Figure, printFigure } from "./report.js";
import { benchSoak } from "./soak.js";
import { benchStorage } from "./storage.js";
import { benchTelemetry } from "./telemetry.js";
import { benchTemplates } from "./templates.js";
import { benchVolumes } from "./volumes.js";

const LOCK = "/tmp/moat-integration-tests.lock";
if (process.env.MOAT_TEST_LOCK_HELD !== "1") {
  if (spawnSync("flock", ["-n", LOCK, "true"]).status !== 0) {
    console.error(`waiting for an integration test run or bench on this host to finish (lock ${LOCK})`);
  }
  const again = spawnSync("flock", [LOCK, process.execPath, ...process.execArgv, ...process.argv.slice(1)], {
    stdio: "inherit",
    env: { ...process.env, MOAT_TEST_LOCK_HELD: "1" },
  });
  process.exit(again.status ?? 1);
}

const suites: Record<string, () => Promise<Figure[]>> = {
  envd: benchEnvd,
  orchestrator: benchOrchestrator,
  platform: benchPlatform,
  storage: benchStorage,
  templates: benchTemplates,
  "code-interpreter": benchCodeInterpreter,
  egress: benchEgress,
  fork: benchFork,
  "node-proxy": benchNodeProxy,
  volumes: benchVolumes,
  artifacts: benchArtifacts,
  relocate: benchRelocate,
  fleet: benchFleet,
  telemetry: benchTelemetry,
  dashboard: benchDashboard,
  io: benchIO,
  kill: benchKill,
  bursts: benchBursts,
  soak: () => benchSoak(),
  density: () => benchDensity(),
  claim: benchClaim,
};
/** Suites too long for a plain `npm run bench`. */
const onlyWhenNamed = new Set(["soak", "density"]);

const filters = process.argv.slice(2).filter((a) => !a.startsWith("--"));
const results: Figure[] = [];
for (const [name, run] of Object.entries(suites)) {
  if (filters.length === 0 ? onlyWhenNamed.has(name) : !filters.some((f) => name.includes(f))) continue;
  console.log(`== ${name}`);
  for (const figure of await run()) {
    printFigure(figure);
    results.push(figure);
  }
}
const out = path.resolve(".bench/results.json");
await mkdir(path.dirname(out), { recursive: true });
await writeFile(out, `${JSON.stringify({ date: new Date().toISOString(), figures: results }, null, 2)}\n`);
console.log(`results written to ${out}`);
