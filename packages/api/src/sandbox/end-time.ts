/**
 * Moving a sandbox's end time: the node enforces it (it kills the sandbox then), the record shows
 * it. Used by set-timeout (any new time), connect and refresh (later times only).
 */
import type { APIContext } from "../context.js";
import { getTeamSandbox, updateSandbox } from "../db/sandboxes.js";
import type { SandboxRow } from "../db/schema.js";
import { SandboxConflictError, SandboxNotFoundError } from "../errors.js";
import { NodeSandboxNotFoundError, NodeTransitionError } from "../orchestrator/node-client.js";
import { logSandbox, markKilled } from "./lifecycle.js";
import { nodeOf } from "./nodes.js";

export type EndTimeRule = "set" | "extend";

/**
 * Sets the end of a running sandbox of the team to `now + seconds`; with "extend", only when that
 * is later than its current end. Answers the sandbox as it is afterwards.
 */
export async function changeEndTime(
  ctx: APIContext,
  teamID: string,
  sandboxID: string,
  seconds: number,
  rule: EndTimeRule,
): Promise<SandboxRow> {
  return ctx.locks.run(sandboxID, async () => {
    const row = await getTeamSandbox(ctx.db, teamID, sandboxID, ["starting", "running", "killing"]);
    if (!row || row.state === "killing") throw new SandboxNotFoundError(sandboxID);
    if (row.state === "starting") throw new SandboxConflictError(sandboxID, "starting");
    const endAt = new Date(Date.now() + seconds * 1000);
    if (rule === "extend" && endAt <= row.end_at) return row;
    try {
      await nodeOf(ctx, row).updateEndTime(sandboxID, endAt);
    } catch (err) {
      if (err instanceof NodeSandboxNotFoundError) {
        await markKilled(ctx, sandboxID, "missing on node");
        throw new SandboxNotFoundError(sandboxID);
      }
      if (err instanceof NodeTransitionError) throw new SandboxConflictError(sandboxID, "changing state");
      throw err;
    }
    const updated = await updateSandbox(ctx.db, sandboxID, ["running"], { end_at: endAt });
    if (!updated) throw new SandboxNotFoundError(sandboxID);
    await logSandbox(ctx, updated, "debug", "end time changed", { endAt: endAt.toISOString() });
    return updated;
  });
}
