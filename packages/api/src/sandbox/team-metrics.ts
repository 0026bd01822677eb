/**
 * A team's metrics over time (E2B's TeamMetric): how many of its sandboxes ran at once and how
 * many started per second, computed from the sandboxes' lives in the database (created, stopped,
 * paused since). A sandbox counts from its creation to its stop, or to the start of its current
 * pause; earlier pauses are not recorded and count as running.
 */
import type { DB } from "../db/database.js";
import { PAUSED_STATES } from "./states.js";

export interface TeamMetric {
  timestamp: string;
  timestampUnix: number;
  concurrentSandboxes: number;
  sandboxStartRate: number;
}

/** A sandbox's life in ms; end undefined while it runs. */
export interface Life {
  start: number;
  end: number | undefined;
}

/** E2B's step for a team metrics range (its CalculateStep), in seconds. */
export function teamStep(start: number, end: number): number {
  const span = end - start;
  if (span < 3600) return 5;
  if (span < 6 * 3600) return 30;
  if (span < 12 * 3600) return 60;
  if (span < 24 * 3600) return 120;
  if (span < 7 * 86_400) return 300;
  return 900;
}

/** What one answer holds at most: a longer range gets wider steps. */
const MAX_POINTS = 10_000;

/**
 * One point per step from `start` to `end` (unix seconds): the most sandboxes alive at once in the
 * step, and the starts in it per second. Stamped with the step's start.
 */
export function teamSeries(lives: readonly Life[], start: number, end: number): TeamMetric[] {
  let step = teamStep(start, end);
  const first = Math.floor(start / step) * step;
  if ((end - first) / step + 1 > MAX_POINTS) step = Math.ceil((end - first + 1) / MAX_POINTS);
  const from = Math.floor(start / step) * step;
  const count = Math.floor((end - from) / step) + 1;
  // +1 at each start, −1 at each end; an end and a start at the same moment do not overlap.
  const events: Array<[number, number]> = [];
  for (const life of lives) {
    events.push([life.start, 1]);
    if (life.end !== undefined) events.push([Math.max(life.end, life.start), -1]);
  }
  events.sort((a, b) => a[0] - b[0] || a[1] - b[1]);
  const points: TeamMetric[] = [];
  let level = 0;
  let next = 0;
  for (let i = 0; i < count; i++) {
    const bucketStart = (from + i * step) * 1000;
    const bucketEnd = bucketStart + step * 1000;
    // What ended or began before this step.
    while (next < events.length && events[next]![0] < bucketStart) level += events[next++]![1];
    let peak = level;
    let starts = 0;
    while (next < events.length && events[next]![0] < bucketEnd) {
      const [, delta] = events[next++]!;
      level += delta;
      if (delta > 0) starts++;
      peak = Math.max(peak, level);
    }
    const timestampUnix = bucketStart / 1000;
    points.push({
      timestamp: new Date(bucketStart).toISOString(),
      timestampUnix,
      concurrentSandboxes: peak,
      sandboxStartRate: Math.round((starts / step) * 1000) / 1000,
    });
  }
  return points;
}

/** The highest point of the series for `metric`, the earliest if several (value 0 at start if none). */
export function teamMax(
  series: readonly TeamMetric[],
  metric: "concurrent_sandboxes" | "sandbox_start_rate",
): { timestamp: string; timestampUnix: number; value: number } {
  const pick = (m: TeamMetric) =>
    metric === "concurrent_sandboxes" ? m.concurrentSandboxes : m.sandboxStartRate;
  let best = series[0];
  for (const m of series) if (best === undefined || pick(m) > pick(best)) best = m;
  if (!best) return { timestamp: new Date(0).toISOString(), timestampUnix: 0, value: 0 };
  return { timestamp: best.timestamp, timestampUnix: best.timestampUnix, value: pick(best) };
}

/** The most sandbox lives one request reads: a team starting more in its range is counted up to this. */
const MAX_LIVES = 200_000;

/** The lives of the team's sandboxes that overlap the range (unix seconds). */
export async function teamLives(db: DB, teamID: string, start: number, end: number): Promise<Life[]> {
  const rows = await db
    .selectFrom("sandboxes")
    .select(["created_at", "stopped_at", "paused_at", "state"])
    .where("team_id", "=", teamID)
    .where("created_at", "<=", new Date(end * 1000 + 999))
    .where((eb) => eb.or([eb("stopped_at", "is", null), eb("stopped_at", ">=", new Date(start * 1000))]))
    .orderBy("created_at", "desc")
    .limit(MAX_LIVES)
    .execute();
  return rows.map((r) => {
    const pausedSince = PAUSED_STATES.includes(r.state) && r.paused_at ? r.paused_at.getTime() : undefined;
    return { start: r.created_at.getTime(), end: r.stopped_at?.getTime() ?? pausedSince };
  });
}
