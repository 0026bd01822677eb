/**
 * What is kept of paused sandboxes: each team's paused sandboxes older than its retention
 * (pausedRetentionSeconds) are deleted, as E2B deletes those paused for too long; and when the
 * node's auto-pauses at end times took a team past maxPausedSandboxes (an explicit pause past it
 * is refused instead), the most recently paused beyond the limit are deleted, as a sandbox
 * without auto-pause is at its end time. Every API process sweeps; each deletion claims the record
 * (paused → killing, a compare-and-set) first, so two sweeps never both delete one sandbox.
 */
import { sql } from "kysely";
import type { APIContext } from "../context.js";
import type { SandboxRow } from "../db/schema.js";
import { SandboxNotFoundError } from "../errors.js";
import { killOnNode } from "../sandbox/kill.js";
import { teamLimits } from "./limits.js";
import { withTeamLock } from "./reserve.js";

/** How often each API process sweeps. */
export const PAUSED_SWEEP_INTERVAL_MS = 60_000;
const BATCH = 100;

export interface SweepResult {
  /** Deleted for being paused longer than their team's retention. */
  expired: number;
  /** Deleted for being beyond their team's maxPausedSandboxes. */
  excess: number;
}

export async function sweepPausedSandboxes(ctx: APIContext, now = new Date()): Promise<SweepResult> {
  const result: SweepResult = { expired: 0, excess: 0 };
  const defaults = ctx.config.quotas;
  // Retention, per team: the team's override, else the operator's default.
  const retention = sql<number>`coalesce((teams.limits->>'pausedRetentionSeconds')::numeric, ${defaults.pausedRetentionSeconds})`;
  for (;;) {
    const expired = await ctx.db
      .selectFrom("sandboxes")
      .innerJoin("teams", "teams.team_id", "sandboxes.team_id")
      .select(["sandboxes.sandbox_id", retention.as("retention")])
      .where("sandboxes.state", "=", "paused")
      .where(sql<boolean>`sandboxes.paused_at < ${now}::timestamptz - make_interval(secs => ${retention})`)
      .orderBy("sandboxes.paused_at")
      .limit(BATCH)
      .execute();
    let deleted = 0;
    for (const row of expired) {
      const cutoff = new Date(now.getTime() - Number(row.retention) * 1000);
      const claimed = await ctx.db
        .updateTable("sandboxes")
        .set({ state: "killing" })
        .where("sandbox_id", "=", row.sandbox_id)
        .where("state", "=", "paused")
        .where("paused_at", "<", cutoff)
        .returningAll()
        .executeTakeFirst();
      if (!claimed) continue;
      const retention = describeSeconds(Number(row.retention));
      if (await deleteClaimed(ctx, claimed, `paused longer than the team's retention (${retention})`))
        deleted++;
    }
    result.expired += deleted;
    if (expired.length < BATCH) break;
    if (deleted === 0) break; // every one failed (a node down): the next sweep tries again
  }

  const limit = sql<number>`coalesce((teams.limits->>'maxPausedSandboxes')::numeric, ${defaults.maxPausedSandboxes})`;
  const over = await ctx.db
    .selectFrom("sandboxes")
    .innerJoin("teams", "teams.team_id", "sandboxes.team_id")
    .select("sandboxes.team_id")
    .where("sandboxes.state", "=", "paused")
    .groupBy(["sandboxes.team_id", "teams.limits"])
    .having(sql<boolean>`count(*) > ${limit}`)
    .execute();
  for (const { team_id: teamID } of over) {
    // Claimed under the team's lock: a pause in flight counts, and a second sweep sees the claims.
    const claimed = await withTeamLock(ctx, teamID, async (tx, team) => {
      const max = teamLimits(defaults, team).maxPausedSandboxes;
      const paused = await tx
        .selectFrom("sandboxes")
        .select("sandbox_id")
        .where("team_id", "=", teamID)
        .where("state", "in", ["paused", "pausing"])
        .orderBy("paused_at", "desc")
        .orderBy("sandbox_id", "desc")
        .execute();
      const rows: SandboxRow[] = [];
      for (const { sandbox_id } of paused.slice(0, Math.max(0, paused.length - max))) {
        const row = await tx
          .updateTable("sandboxes")
          .set({ state: "killing" })
          .where("sandbox_id", "=", sandbox_id)
          .where("state", "=", "paused")
          .returningAll()
          .executeTakeFirst();
        if (row) rows.push(row);
      }
      return { rows, max };
    });
    for (const row of claimed.rows) {
      const reason = `auto-paused beyond the team's maximum of paused sandboxes (${claimed.max})`;
      if (await deleteClaimed(ctx, row, reason)) result.excess++;
    }
  }
  if (result.expired + result.excess > 0) ctx.logger.info({ ...result }, "paused sandboxes deleted");
  return result;
}

/** Kills a sandbox the sweep claimed; a failure leaves it paused for the next sweep. */
async function deleteClaimed(ctx: APIContext, claimed: SandboxRow, reason: string): Promise<boolean> {
  ctx.catalog.update(claimed.sandbox_id, claimed);
  try {
    await killOnNode(ctx, claimed, "paused", reason);
    return true;
  } catch (err) {
    if (err instanceof SandboxNotFoundError) return true; // gone from its node already: closed

    ctx.logger.warn(
      { err, sandboxID: claimed.sandbox_id },
      "could not delete a paused sandbox; trying again later",
    );
    return false;
  }
}

/** A retention in the largest whole unit it is (30 days, 12 hours, 90 seconds). */
function describeSeconds(seconds: number): string {
  for (const [unit, size] of [
    ["day", 86_400],
    ["hour", 3_600],
    ["minute", 60],
  ] as const) {
    if (seconds >= size && seconds % size === 0) {
      const n = seconds / size;
      return `${n} ${unit}${n === 1 ? "" : "s"}`;
    }
  }
  return `${seconds} second${seconds === 1 ? "" : "s"}`;
}
