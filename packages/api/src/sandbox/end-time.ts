/**
 * Moving a sandbox's end time: the node enforces it (it kills or auto-pauses the sandbox then),
 * the record shows it. Used by set-timeout (any new time), connect and refresh (later times only).
 */
import type { APIContext } from "../context.js";
import { getTeamSandbox, updateSandbox } from "../db/sandboxes.js";
import type { SandboxRow } from "../db/schema.js";
import { SandboxConflictError, SandboxNotFoundError } from "../errors.js";
import { NodeSandboxNotFoundError, NodeTransitionError } from "../orchestrator/node-client.js";
import { logSandbox, markKilled } from "./lifecycle.js";
import { awaitTransition } from "./node-state.js";
import { nodeOf } from "./nodes.js";
import { LIVE_STATES, stateConflict } from "./states.js";

export type EndTimeRule = "set" | "extend";

/**
 * Sets the end of a sandbox of the team to `endAt`; with "extend", only when that is later than
 * its current end. Answers the sandbox as it is afterwards.
 *
 * A paused sandbox has no timer on its node, so its new end is only recorded (and shown by get
 * and list); resuming it sets a fresh one (connect's timeout, or its original lifetime for an
 * auto-resume), as E2B's paused sandboxes have no end until they run again. A sandbox in the
 * middle of a pause or resume (this process's, or the node's own auto-pause) is waited for, and
 * its new end goes where the outcome needs it.
 */
export async function changeEndTime(
  ctx: APIContext,
  teamID: string,
  sandboxID: string,
  endAt: Date,
  rule: EndTimeRule,
): Promise<SandboxRow> {
  return ctx.locks.run(sandboxID, async () => {
    for (let attempt = 0; attempt < MAX_ATTEMPTS; attempt++) {
      const row = await getTeamSandbox(ctx.db, teamID, sandboxID, LIVE_STATES);
      if (!row || row.state === "killing") throw new SandboxNotFoundError(sandboxID);
      if (row.state === "pausing" || row.state === "resuming") {
        // The outcome decides where the end goes (the node's timer or the paused record).
        await settle(ctx, row);
        continue;
      }
      if (row.state !== "running" && row.state !== "paused") throw stateConflict(sandboxID, row.state);
      if (rule === "extend" && endAt <= row.end_at) return row;
      if (row.state === "running") {
        try {
          await nodeOf(ctx, row).updateEndTime(sandboxID, endAt);
        } catch (err) {
          if (err instanceof NodeSandboxNotFoundError) {
            await markKilled(ctx, sandboxID, "missing on node");
            throw new SandboxNotFoundError(sandboxID);
          }
          // The node began a pause of its own that the record does not show yet.
          if (err instanceof NodeTransitionError) {
            await settle(ctx, row);
            continue;
          }
          throw err;
        }
      }
      // From pausing and paused too: the node may have paused it since it was read.
      const updated = await updateSandbox(ctx.db, sandboxID, ["running", "pausing", "paused"], {
        end_at: endAt,
      });
      if (!updated) throw new SandboxNotFoundError(sandboxID);
      await logSandbox(ctx, updated, "debug", "end time changed", { endAt: endAt.toISOString() });
      return updated;
    }
    throw new SandboxConflictError(sandboxID, "changing state");
  });
}

/** Rounds of "read, wait for a transition" before a sandbox that keeps changing gets 409. */
const MAX_ATTEMPTS = 3;

/** Waits for the sandbox's pause or resume to end; 409 when it does not end in time. */
async function settle(ctx: APIContext, row: SandboxRow): Promise<void> {
  const settled = await awaitTransition(ctx, row);
  if (settled?.state === "pausing" || settled?.state === "resuming")
    throw stateConflict(row.sandbox_id, settled.state);
}

/** The end time `seconds` from now. */
export function endAfter(seconds: number): Date {
  return new Date(Date.now() + seconds * 1000);
}
