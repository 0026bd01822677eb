/**
 * Killing a sandbox on request, running or paused (the node removes a paused one's files and
 * snapshot). The record moves to killing first (a compare-and-set, so one of two concurrent kills
 * wins), then the node kills it, then the record is closed. A node that no longer has the sandbox
 * means it was already gone: the record is closed and the caller hears "not found", as for a
 * second kill.
 */
import type { APIContext } from "../context.js";
import { getTeamSandbox, updateSandbox } from "../db/sandboxes.js";
import type { SandboxRow, SandboxRowState } from "../db/schema.js";
import { SandboxNotFoundError } from "../errors.js";
import { NodeSandboxNotFoundError } from "../orchestrator/node-client.js";
import { markKilled } from "./lifecycle.js";
import { nodeOf } from "./nodes.js";
import { LIVE_STATES, stateConflict } from "./states.js";

const KILLABLE: readonly SandboxRowState[] = ["running", "paused", "killing"];

export async function killSandbox(ctx: APIContext, teamID: string, sandboxID: string): Promise<void> {
  // A pause or resume this process has under way ends first (in a whole state), then the kill.
  await ctx.transitions.get(sandboxID)?.settled;
  const row = await getTeamSandbox(ctx.db, teamID, sandboxID, LIVE_STATES);
  if (!row) throw new SandboxNotFoundError(sandboxID);
  // Starting, or a transition another API process runs, ends with the node's answer; until then a
  // kill is a 409 (retry).
  if (!KILLABLE.includes(row.state)) throw stateConflict(sandboxID, row.state);
  // A record already "killing" (a kill in flight, or one that failed half-way) is killed again:
  // the node's kill is idempotent, and a stuck record gets a way out.
  const claimed = await updateSandbox(ctx.db, sandboxID, [row.state], { state: "killing" });
  if (!claimed) {
    const current = await getTeamSandbox(ctx.db, teamID, sandboxID, LIVE_STATES);
    if (current && !KILLABLE.includes(current.state)) throw stateConflict(sandboxID, current.state);
    throw new SandboxNotFoundError(sandboxID);
  }
  ctx.catalog.update(sandboxID, claimed);
  await killOnNode(ctx, claimed, row.state, "request");
}

/**
 * The node half of a kill, once the record is `killing` (`claimed`; it was `before`): the node
 * kills it and the record is closed with `reason`. A node that no longer has it closes the record
 * and answers "not found"; any other failure puts the record back to `before` and throws.
 */
export async function killOnNode(
  ctx: APIContext,
  claimed: SandboxRow,
  before: SandboxRowState,
  reason: string,
): Promise<void> {
  const sandboxID = claimed.sandbox_id;
  try {
    await nodeOf(ctx, claimed).delete(sandboxID);
  } catch (err) {
    if (err instanceof NodeSandboxNotFoundError) {
      await markKilled(ctx, sandboxID, "missing on node");
      throw new SandboxNotFoundError(sandboxID);
    }
    if (before !== "killing") {
      ctx.catalog.update(sandboxID, await updateSandbox(ctx.db, sandboxID, ["killing"], { state: before }));
    }
    throw err;
  }
  await markKilled(ctx, sandboxID, reason);
}
