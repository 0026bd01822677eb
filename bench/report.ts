import type { Summary } from "./stats.js";

/** One figure of the targets table, measured next to its baseline in the same run. */
export interface Figure {
  name: string;
  unit: "ms" | "MB";
  value: Summary;
  baseline?: { name: string; value: Summary };
  /** The target for the median (or the ratio to the baseline when `targetRatio` is set). */
  target?: { median?: number; p99?: number; ratio?: number };
  /** Extra lines printed under the figure: where the time goes, what each sample really was. */
  notes?: string[];
}

const fmt = (x: number) => (x >= 100 ? x.toFixed(0) : x >= 10 ? x.toFixed(1) : x.toFixed(2));

export function printFigure(f: Figure): void {
  const ratio = f.baseline ? f.value.median / f.baseline.value.median : undefined;
  const parts = [
    `${f.name}: median ${fmt(f.value.median)} ${f.unit}, p99 ${fmt(f.value.p99)} ${f.unit} (n=${f.value.n})`,
  ];
  if (f.baseline) {
    parts.push(
      `  baseline ${f.baseline.name}: median ${fmt(f.baseline.value.median)} ${f.unit}, p99 ${fmt(f.baseline.value.p99)} ${f.unit}; ratio ${ratio!.toFixed(2)}x`,
    );
  }
  if (f.target) {
    const checks: string[] = [];
    if (f.target.median !== undefined) {
      checks.push(
        `median ≤ ${f.target.median} ${f.unit}: ${f.value.median <= f.target.median ? "met" : "MISSED"}`,
      );
    }
    if (f.target.p99 !== undefined) {
      checks.push(`p99 ≤ ${f.target.p99} ${f.unit}: ${f.value.p99 <= f.target.p99 ? "met" : "MISSED"}`);
    }
    if (f.target.ratio !== undefined && ratio !== undefined) {
      checks.push(`ratio ≤ ${f.target.ratio}x: ${ratio <= f.target.ratio ? "met" : "MISSED"}`);
    }
    parts.push(`  target ${checks.join("; ")}`);
  }
  for (const note of f.notes ?? []) parts.push(`  ${note}`);
  console.log(parts.join("\n"));
}
