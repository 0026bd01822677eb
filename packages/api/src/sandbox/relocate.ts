/**
 * Resuming a paused sandbox away from its node. A node with shared artifact storage publishes each
 * pause (memory, disk and its record of the sandbox) and says which (`artifact_generation`); when
 * that node is gone, another node fetches the published pause, resumes it, and removes it from the
 * store, and the record moves there. The old node, if it comes back, drops its copy (the node
 * watcher's reconcile: a sandbox it holds whose record lives elsewhere).
 *
 * A resume goes elsewhere only when its node certainly does not run it: the node is out of
 * service by the registry's word, or not configured, or its call failed as unavailable (or
 * without the sandbox) and a Get since finds it paused, or cannot reach it. A node that answers it
 * is between states keeps it.
 */
import { type SandboxInfo, SandboxState } from "@moat/shared/gen/orchestrator";
import type { APIContext } from "../context.js";
import { getSandbox, updateSandbox } from "../db/sandboxes.js";
import type { SandboxRow } from "../db/schema.js";
import { NodeUnreachableError, SandboxNotFoundError } from "../errors.js";
import {
  NodeBusyError,
  type NodeClient,
  NodeSandboxNotFoundError,
  NodeUnavailableError,
} from "../orchestrator/node-client.js";
import { MAX_PLACEMENT_ATTEMPTS, placeSandbox } from "../placement/placement.js";
import { nodeGone } from "./nodes.js";
import type { ResumeRequest } from "./resume.js";
import { stateConflict } from "./states.js";

export type RelocateVerdict =
  /** It runs on its node after all (a call that failed after the node acted). */
  | { action: "running"; info: SandboxInfo }
  /** Resume it on another node. */
  | { action: "relocate" }
  /** Handle the failure as any other failed resume (its node keeps it). */
  | { action: "recover" };

/** After its node's Resume call failed: whether the published pause may resume elsewhere. */
export async function mayRelocate(
  ctx: APIContext,
  home: NodeClient,
  row: SandboxRow,
  err: unknown,
): Promise<RelocateVerdict> {
  if (!row.artifact_generation) return { action: "recover" };
  if (!(err instanceof NodeUnavailableError || err instanceof NodeSandboxNotFoundError)) {
    return { action: "recover" };
  }
  const info = await home.get(row.sandbox_id).catch((getErr: unknown) => {
    if (getErr instanceof NodeUnavailableError || getErr instanceof NodeSandboxNotFoundError)
      return undefined;
    throw getErr;
  });
  if (info?.state === SandboxState.RUNNING) return { action: "running", info };
  if (info && info.state !== SandboxState.PAUSED) return { action: "recover" };
  ctx.logger.warn(
    { err, sandboxID: row.sandbox_id, nodeID: home.id },
    "the sandbox's node cannot resume it; resuming its published pause on another node",
  );
  return { action: "relocate" };
}

/**
 * Places the resume of `row`'s published pause on another node (up to MAX_PLACEMENT_ATTEMPTS, a
 * busy or unreachable one skipped for the next), the record naming that node while it resumes
 * there. When none can, the record is paused on its old node again and the request hears why.
 */
export async function relocateResume(
  ctx: APIContext,
  row: SandboxRow,
  request: ResumeRequest,
  cause?: Error,
): Promise<{ info: SandboxInfo; nodeID: string }> {
  const sandboxID = row.sandbox_id;
  const generation = row.artifact_generation ?? 0;
  const candidates = [...ctx.nodes.values()].filter((n) => !nodeGone(n));
  const tried = new Set([row.node_id]);
  let lastError = cause;
  for (let attempt = 0; attempt < MAX_PLACEMENT_ATTEMPTS; attempt++) {
    const node = placeSandbox(ctx.placement, candidates, tried);
    if (!node) break;
    tried.add(node.id);
    // The record names the node before it is asked: its reconcile must not take the sandbox for
    // a stray copy, and the old node's must (once the resume is recorded).
    const moved = await updateSandbox(ctx.db, sandboxID, ["resuming"], { node_id: node.id });
    if (!moved) throw await changedMeanwhile(ctx, sandboxID);
    try {
      const info = await node.resume(sandboxID, request.endAt, request.reboot, generation);
      ctx.logger.info(
        { sandboxID, from: row.node_id, to: node.id, generation },
        "sandbox resumed on another node",
      );
      return { info, nodeID: node.id };
    } catch (err) {
      lastError = err as Error;
      ctx.logger.warn({ err, sandboxID, nodeID: node.id }, "resuming a published pause failed");
      if (err instanceof NodeBusyError || err instanceof NodeUnavailableError) continue;
      break;
    }
  }
  const reverted = await updateSandbox(ctx.db, sandboxID, ["resuming"], {
    state: "paused",
    node_id: row.node_id,
  });
  if (reverted) ctx.catalog.update(sandboxID, reverted);
  throw new NodeUnreachableError(
    `sandbox '${sandboxID}' is paused on node '${row.node_id}', which is unavailable, and no other node could resume it${
      lastError ? ` (${lastError.message})` : ""
    }; retry in a moment`,
  );
}

/**
 * The answer for a paused sandbox whose node is gone and which was not published: only that node
 * has it. The record goes back to paused.
 */
export async function homeUnavailable(ctx: APIContext, row: SandboxRow): Promise<Error> {
  const reverted = await updateSandbox(ctx.db, row.sandbox_id, ["resuming"], { state: "paused" });
  if (reverted) ctx.catalog.update(row.sandbox_id, reverted);
  return new NodeUnreachableError(
    `sandbox '${row.sandbox_id}' is paused on node '${row.node_id}', and its node is unavailable; try again when node '${row.node_id}' is back`,
  );
}

async function changedMeanwhile(ctx: APIContext, sandboxID: string): Promise<Error> {
  const current = await getSandbox(ctx.db, sandboxID);
  if (!current || current.state === "killed" || current.state === "killing") {
    return new SandboxNotFoundError(sandboxID);
  }
  return stateConflict(sandboxID, current.state);
}
