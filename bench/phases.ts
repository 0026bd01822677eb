/**
 * Where the time of a create, pause or resume goes, from the orchestrator's own log lines (pino JSON;
 * "sandbox created", "sandbox paused" and "sandbox resumed" carry per-phase milliseconds).
 */

/**
 * The orchestrator's JSON log lines with message `msg` (after the first `skip` characters of the
 * log); the API logs some of the same messages under its own component.
 */
export function logEntries(log: string, msg: string, skip = 0): Record<string, unknown>[] {
  const out: Record<string, unknown>[] = [];
  for (const line of log.slice(skip).split("\n")) {
    if (!line.includes(msg)) continue;
    try {
      const entry = JSON.parse(line) as Record<string, unknown>;
      if (entry.msg === msg && entry.component === "orchestrator") out.push(entry);
    } catch {
      // not a whole JSON line
    }
  }
  return out;
}

/**
 * "phases (median ms): network 20, rootfs 8, …" over the entries' numeric fields, in the order
 * the orchestrator logged them; undefined when there are none.
 */
export function phaseNote(entries: Record<string, unknown>[], ignore: string[] = []): string | undefined {
  const phases = new Map<string, number[]>();
  for (const entry of entries) {
    for (const [key, value] of Object.entries(entry)) {
      if (typeof value !== "number" || ignore.includes(key)) continue;
      if (["level", "time", "pid", "slot", "ready"].includes(key)) continue;
      if (!phases.has(key)) phases.set(key, []);
      phases.get(key)!.push(value);
    }
  }
  if (phases.size === 0) return undefined;
  const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.ceil(xs.length / 2) - 1]!;
  const parts = [...phases].map(([key, xs]) => `${key} ${median(xs)}`);
  return `phases, node side (median ms over ${entries.length}): ${parts.join(", ")}`;
}

/** "20 pool" or "18 pool, 2 snapshot": what the samples really were. */
export function kindNote(kinds: string[], source = "orchestrator Get"): string {
  const counts = new Map<string, number>();
  for (const kind of kinds) counts.set(kind || "?", (counts.get(kind || "?") ?? 0) + 1);
  return `start kind of each sample (${source}): ${[...counts].map(([k, n]) => `${n} ${k}`).join(", ")}`;
}
