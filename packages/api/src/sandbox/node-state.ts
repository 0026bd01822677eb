/**
 * Taking the node's word for whether a sandbox runs or is paused. The node pauses sandboxes on its
 * own (auto-pause at the end time), another API process may pause or resume them, events can be
 * missed while the stream is down, and a Pause or Resume call can fail after the node acted: in
 * each case the record is brought in line with what the node reports (Get, List).
 */
import { type SandboxInfo, SandboxState } from "@moat/shared/gen/orchestrator";
import type { APIContext } from "../context.js";
import { getSandbox, updateSandbox } from "../db/sandboxes.js";
import type { SandboxRow } from "../db/schema.js";
import { NodeSandboxNotFoundError } from "../orchestrator/node-client.js";
import { markKilled, recordStateChange } from "./lifecycle.js";
import { nodeOf } from "./nodes.js";
import { nodeStateChanges } from "./reconcile.js";

/**
 * Brings the record in line with the node's RUNNING or PAUSED sandbox (other node states are
 * between states: the record waits for their outcome). Answers the record afterwards.
 */
export async function applyNodeState(
  ctx: APIContext,
  row: SandboxRow,
  info: SandboxInfo,
): Promise<SandboxRow> {
  const changes = nodeStateChanges(row, info);
  if (!changes) return row;
  const changed = await updateSandbox(ctx.db, row.sandbox_id, [row.state], changes);
  if (!changed) return (await getSandbox(ctx.db, row.sandbox_id)) ?? row;
  await recordStateChange(ctx, row.state, changed, { source: "node" });
  return changed;
}

/**
 * After a Pause or Resume call failed: asks the node where the sandbox is and records that. When
 * the node cannot say, the record goes back to `fallback`, the state the transition left (the
 * node's events and the next reconcile correct it if the node did act). Answers the record
 * afterwards; undefined when the node no longer has the sandbox (the record is closed).
 */
export async function settleFromNode(
  ctx: APIContext,
  row: SandboxRow,
  fallback: "running" | "paused",
): Promise<SandboxRow | undefined> {
  let info: SandboxInfo;
  try {
    info = await nodeOf(ctx, row).get(row.sandbox_id);
  } catch (err) {
    if (err instanceof NodeSandboxNotFoundError) {
      await markKilled(ctx, row.sandbox_id, "missing on node");
      return undefined;
    }
    ctx.logger.warn({ err, sandboxID: row.sandbox_id }, "could not ask the node after a failed transition");
    const reverted = await updateSandbox(ctx.db, row.sandbox_id, ["pausing", "resuming"], {
      state: fallback,
    });
    if (reverted) ctx.catalog.update(row.sandbox_id, reverted);
    return reverted ?? (await getSandbox(ctx.db, row.sandbox_id));
  }
  const current = await getSandbox(ctx.db, row.sandbox_id);
  if (!current) return undefined;
  const settled = await applyNodeState(ctx, current, info);
  if (settled.state === "pausing" || settled.state === "resuming") {
    // The node is still between states: the record waits for the node's event, or the reconcile.
    ctx.logger.warn({ sandboxID: row.sandbox_id, nodeState: info.state }, "transition left unsettled");
  }
  return settled;
}

/** How long a request waits for a pause or resume it did not start before answering 409. */
export const TRANSITION_WAIT_MS = 60_000;
const TRANSITION_POLL_MS = 100;

/**
 * Waits while the sandbox is between states, then answers its record: a transition in flight in
 * this process is awaited; one the node runs on its own (an auto-pause), or for another API
 * process, is followed on the node (Get) until it runs or is paused, and recorded. Answers
 * undefined when the sandbox is gone; the record as it still is when the wait ran out.
 */
export async function awaitTransition(
  ctx: APIContext,
  row: SandboxRow,
  timeoutMs = TRANSITION_WAIT_MS,
): Promise<SandboxRow | undefined> {
  const sandboxID = row.sandbox_id;
  const local = ctx.transitions.get(sandboxID);
  if (local) {
    await local.settled;
    return getSandbox(ctx.db, sandboxID);
  }
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    let info: SandboxInfo;
    try {
      info = await nodeOf(ctx, row).get(sandboxID);
    } catch (err) {
      if (!(err instanceof NodeSandboxNotFoundError)) throw err;
      await markKilled(ctx, sandboxID, "missing on node");
      return undefined;
    }
    const settled = info.state === SandboxState.RUNNING || info.state === SandboxState.PAUSED;
    const current = await getSandbox(ctx.db, sandboxID);
    if (!current) return undefined;
    if (settled) return applyNodeState(ctx, current, info);
    if (Date.now() >= deadline) return current;
    await new Promise((resolve) => setTimeout(resolve, TRANSITION_POLL_MS));
  }
}
