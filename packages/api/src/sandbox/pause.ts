/**
 * Pausing a sandbox on request. The record moves running → pausing (a compare-and-set, and a
 * transition registered in this process: of two concurrent pauses one goes to the node, the other
 * hears 409), the node pauses it, and the record becomes paused with no host address (the node
 * gives it a new one on resume). A sandbox paused already answers 409 too, which the SDK's
 * `pause()` reads as "already paused" (false).
 */
import type { SandboxInfo } from "@moat/shared/gen/orchestrator";
import type { APIContext } from "../context.js";
import { getSandbox, getTeamSandbox, updateSandbox } from "../db/sandboxes.js";
import type { SandboxRow } from "../db/schema.js";
import { SandboxConflictError, SandboxNotFoundError } from "../errors.js";
import { NodeSandboxNotFoundError, NodeTransitionError } from "../orchestrator/node-client.js";
import { takePausedSlot } from "../quotas/reserve.js";
import { markKilled, recordStateChange } from "./lifecycle.js";
import { settleFromNode } from "./node-state.js";
import { nodeOf } from "./nodes.js";
import { LIVE_STATES, stateConflict } from "./states.js";

export async function pauseSandbox(
  ctx: APIContext,
  teamID: string,
  sandboxID: string,
  memory: boolean | undefined,
): Promise<void> {
  const row = await getTeamSandbox(ctx.db, teamID, sandboxID, LIVE_STATES);
  if (!row) throw new SandboxNotFoundError(sandboxID);
  if (row.state === "paused") throw alreadyPaused(sandboxID);
  if (row.state !== "running") throw stateConflict(sandboxID, row.state);
  const transition = ctx.transitions.start(sandboxID, "pause", () => pauseOnNode(ctx, row, memory));
  if (!transition) {
    const inFlight = ctx.transitions.get(sandboxID);
    throw stateConflict(sandboxID, inFlight?.kind === "resume" ? "resuming" : "pausing");
  }
  await transition.done;
}

function alreadyPaused(sandboxID: string): SandboxConflictError {
  return new SandboxConflictError(sandboxID, "paused", `sandbox '${sandboxID}' is already paused`);
}

async function pauseOnNode(
  ctx: APIContext,
  row: SandboxRow,
  memory: boolean | undefined,
): Promise<SandboxRow> {
  const sandboxID = row.sandbox_id;
  // A pause takes one of the team's paused sandboxes.
  const claimed = await takePausedSlot(ctx, row.team_id, (tx) =>
    updateSandbox(tx, sandboxID, ["running"], { state: "pausing" }),
  );
  if (!claimed) {
    // Another API process, a kill or a node event changed it since it was read.
    const current = await getSandbox(ctx.db, sandboxID);
    if (current?.state === "paused") throw alreadyPaused(sandboxID);
    if (!current || current.state === "killed") throw new SandboxNotFoundError(sandboxID);
    throw stateConflict(sandboxID, current.state);
  }
  ctx.catalog.update(sandboxID, claimed);
  let info: SandboxInfo;
  try {
    info = await nodeOf(ctx, row).pause(sandboxID, memory);
  } catch (err) {
    if (err instanceof NodeSandboxNotFoundError) {
      await markKilled(ctx, sandboxID, "missing on node");
      throw new SandboxNotFoundError(sandboxID);
    }
    const settled = await settleFromNode(ctx, claimed, "running");
    if (!settled) throw new SandboxNotFoundError(sandboxID);
    if (err instanceof NodeTransitionError) {
      // The node paused it first (auto-pause at its end time), or it is changing state there.
      if (settled.state === "paused") throw alreadyPaused(sandboxID);
      throw stateConflict(sandboxID, settled.state);
    }
    throw err;
  }
  // From running too: a reconcile may have reverted the record while the call was under way.
  const paused = await updateSandbox(ctx.db, sandboxID, ["pausing", "running"], {
    state: "paused",
    host_address: null,
    // Published to the artifact store: another node can resume it if this one goes.
    artifact_generation: info.artifactGeneration || null,
  });
  if (!paused) {
    const current = await getSandbox(ctx.db, sandboxID);
    if (current?.state === "paused") return current;
    throw new SandboxNotFoundError(sandboxID);
  }
  await recordStateChange(ctx, "running", paused, memory === false ? { memory: "false" } : {});
  return paused;
}
