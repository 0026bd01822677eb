/**
 * `npm run bench`: every figure of the targets table in design.md, each beside a baseline measured
 * in the same run. Prints medians, p99s and ratios, and writes them as JSON to .bench/results.json.
 * `npm run bench -- envd` runs only the suites whose name matches.
 */
import { mkdir, writeFile } from "node:fs/promises";
import path from "node:path";
import { benchEnvd } from "./envd.js";
import { benchOrchestrator } from "./orchestrator.js";
import { benchPlatform } from "./platform.js";
import { type Figure, printFigure } from "./report.js";
import { benchStorage } from "./storage.js";
import { benchTemplates } from "./templates.js";

const suites: Record<string, () => Promise<Figure[]>> = {
  envd: benchEnvd,
  orchestrator: benchOrchestrator,
  platform: benchPlatform,
  storage: benchStorage,
  templates: benchTemplates,
};

const filters = process.argv.slice(2);
const results: Figure[] = [];
for (const [name, run] of Object.entries(suites)) {
  if (filters.length > 0 && !filters.some((f) => name.includes(f))) continue;
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
