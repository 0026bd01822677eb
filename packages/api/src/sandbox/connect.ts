/**
 * Connecting to a sandbox by id (both connect routes): a running sandbox is answered as it is,
 * a paused one is resumed first. Either way it then lives at least `timeoutSeconds` more: connect
 * moves the end time later, never sooner.
 */
import type { APIContext } from "../context.js";
import { getTeamSandbox } from "../db/sandboxes.js";
import { changeEndTime, endAfter } from "./end-time.js";
import { type Reached, resumeOrGet } from "./resume.js";
import { LIVE_STATES, stateConflict } from "./states.js";

/** Rounds of "resume, then extend" before giving up on a sandbox that keeps pausing under us. */
const MAX_ROUNDS = 3;

export async function connectSandbox(
  ctx: APIContext,
  teamID: string,
  sandboxID: string,
  options: { timeoutSeconds: number; reboot: boolean },
): Promise<Reached> {
  // One end time for the resume and the extension: a sandbox this call resumed needs no second
  // call to its node.
  const endAt = endAfter(options.timeoutSeconds);
  const find = () => getTeamSandbox(ctx.db, teamID, sandboxID, LIVE_STATES);
  for (let round = 0; round < MAX_ROUNDS; round++) {
    const reached = await resumeOrGet(ctx, sandboxID, find, { endAt, reboot: options.reboot });
    // The resume set this end already: answered as resumed, without reading the record again (a
    // kill that waited for the resume may be under way by now, and comes after this connect).
    if (reached.resumed && reached.row.state === "running" && reached.row.end_at >= endAt) return reached;
    const row = await changeEndTime(ctx, teamID, sandboxID, endAt, "extend");
    // Paused again in between (its node auto-paused it at its end time): resume it again.
    if (row.state === "running") return { row, resumed: reached.resumed };
  }
  throw stateConflict(sandboxID, "pausing");
}
