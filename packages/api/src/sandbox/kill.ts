/**
 * Killing a sandbox on request. The record moves running → killing first (a compare-and-set, so
 * one of two concurrent kills wins), then the node kills it, then the record is closed. A node
 * that no longer has the sandbox means it was already gone: the record is closed and the caller
 * hears "not found", as for a second kill.
 */
import type { APIContext } from "../context.js";
import { getTeamSandbox, updateSandbox } from "../db/sandboxes.js";
import { SandboxConflictError, SandboxNotFoundError } from "../errors.js";
import { NodeSandboxNotFoundError } from "../orchestrator/node-client.js";
import { markKilled } from "./lifecycle.js";
import { nodeOf } from "./nodes.js";

export async function killSandbox(ctx: APIContext, teamID: string, sandboxID: string): Promise<void> {
  const row = await getTeamSandbox(ctx.db, teamID, sandboxID, ["starting", "running", "paused", "killing"]);
  if (!row) throw new SandboxNotFoundError(sandboxID);
  if (row.state === "starting") throw new SandboxConflictError(sandboxID, "starting");
  // A record already "killing" (a kill in flight, or one that failed half-way) is killed again:
  // the node's kill is idempotent, and a stuck record gets a way out.
  const claimed = await updateSandbox(ctx.db, sandboxID, [row.state], { state: "killing" });
  if (!claimed) throw new SandboxNotFoundError(sandboxID);
  ctx.catalog.update(sandboxID, claimed);
  try {
    await nodeOf(ctx, row).delete(sandboxID);
  } catch (err) {
    if (err instanceof NodeSandboxNotFoundError) {
      await markKilled(ctx, sandboxID, "missing on node");
      throw new SandboxNotFoundError(sandboxID);
    }
    if (row.state !== "killing") {
      ctx.catalog.update(
        sandboxID,
        await updateSandbox(ctx.db, sandboxID, ["killing"], { state: row.state }),
      );
    }
    throw err;
  }
  await markKilled(ctx, sandboxID, "request");
}
