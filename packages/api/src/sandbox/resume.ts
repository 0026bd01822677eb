/**
 * Resuming a paused sandbox: on connect, on the deprecated resume route, and for the client
 * proxy's auto-resume. The record moves paused → resuming (a compare-and-set, and a transition
 * registered in this process), its node restores it until the new end time, and the record
 * becomes running at the new host address the node answers (it changes on every resume).
 *
 * One resume per sandbox: a request that finds a resume in flight here shares its outcome, and
 * one that finds a pause in flight (here, or the node's own auto-pause) waits for it and then
 * resumes. The node restores a sandbox where it was paused: a busy node answers 429 (retry), as a
 * create that found every node busy. When that node is gone (not configured, unhealthy, draining,
 * or unavailable when called) and it published the pause to the shared artifact store, the resume
 * is placed on another node, which fetches it (sandbox/relocate.ts); an unpublished one answers
 * 503 until its node is back.
 */
import type { CatalogEntry } from "@moat/shared";
import type { SandboxInfo } from "@moat/shared/gen/orchestrator";
import type { APIContext } from "../context.js";
import { getSandbox, updateSandbox } from "../db/sandboxes.js";
import type { SandboxRow } from "../db/schema.js";
import {
  CapacityError,
  NodeUnreachableError,
  QuotaExceededError,
  SandboxConflictError,
  SandboxNotFoundError,
} from "../errors.js";
import {
  NodeBusyError,
  NodeSandboxNotFoundError,
  NodeTransitionError,
  NodeUnavailableError,
} from "../orchestrator/node-client.js";
import { takeRunningSlot } from "../quotas/reserve.js";
import { markKilled, recordStateChange } from "./lifecycle.js";
import { applyNodeState, awaitTransition, settleFromNode } from "./node-state.js";
import { nodeGone } from "./nodes.js";
import { homeUnavailable, mayRelocate, relocateResume } from "./relocate.js";
import { stateConflict } from "./states.js";

export interface ResumeRequest {
  /** The end time the node enforces once the sandbox runs again. */
  endAt: Date;
  /** Boot afresh from the kept files instead of restoring memory (connect's `memory: false`). */
  reboot: boolean;
}

export interface Reached {
  row: SandboxRow;
  /** Whether it was paused (this request resumed it, or shared the resume under way). */
  resumed: boolean;
}

/** How often a request waits for a transition in flight here before it gives up with 409. */
const MAX_WAITS = 3;

/**
 * The sandbox running: as it is when it runs, resumed when it is paused. `find` reads its record
 * (scoped to the caller's team for requests); undefined, killing or killed is a 404.
 */
export async function resumeOrGet(
  ctx: APIContext,
  sandboxID: string,
  find: () => Promise<SandboxRow | undefined>,
  request: ResumeRequest,
): Promise<Reached> {
  for (let wait = 0; wait <= MAX_WAITS; wait++) {
    const row = await find();
    if (!row || row.state === "killing" || row.state === "killed") throw new SandboxNotFoundError(sandboxID);
    const inFlight = ctx.transitions.get(sandboxID);
    if (inFlight?.kind === "resume") return { row: await inFlight.done, resumed: true };
    if (inFlight) {
      await inFlight.settled;
      continue;
    }
    if (row.state === "running") return { row, resumed: false };
    if (row.state === "pausing" || row.state === "resuming") {
      // Not this process's transition: the node's auto-pause, or another API process.
      const settled = await awaitTransition(ctx, row);
      if (settled?.state === "pausing" || settled?.state === "resuming") {
        throw stateConflict(sandboxID, settled.state);
      }
      continue;
    }
    if (row.state !== "paused") throw stateConflict(sandboxID, row.state);
    // Nothing was awaited since the check above, so nothing can have started: this start succeeds.
    const transition = ctx.transitions.start(sandboxID, "resume", () => resumeOnNode(ctx, row, request));
    if (transition) return { row: await transition.done, resumed: true };
  }
  throw stateConflict(sandboxID, "pausing");
}

async function resumeOnNode(ctx: APIContext, row: SandboxRow, request: ResumeRequest): Promise<SandboxRow> {
  const sandboxID = row.sandbox_id;
  // A resume takes one of the team's running sandboxes, as a create does.
  const claimed = await takeRunningSlot(ctx, row.team_id, (tx) =>
    updateSandbox(tx, sandboxID, ["paused"], { state: "resuming" }),
  );
  if (!claimed) {
    // Another API process, a kill or a node event changed it since it was read.
    const current = await getSandbox(ctx.db, sandboxID);
    if (current?.state === "running") return current;
    if (!current || current.state === "killed" || current.state === "killing") {
      throw new SandboxNotFoundError(sandboxID);
    }
    throw stateConflict(sandboxID, current.state);
  }
  ctx.catalog.update(sandboxID, claimed);
  let info: SandboxInfo;
  let nodeID = claimed.node_id;
  const home = ctx.nodes.get(claimed.node_id);
  if (!home || nodeGone(home)) {
    if (!claimed.artifact_generation) throw await homeUnavailable(ctx, claimed);
    ({ info, nodeID } = await relocateResume(ctx, claimed, request));
  } else {
    try {
      info = await home.resume(sandboxID, request.endAt, request.reboot);
    } catch (err) {
      const verdict = await mayRelocate(ctx, home, claimed, err);
      if (verdict.action === "running") return applyNodeState(ctx, claimed, verdict.info);
      if (verdict.action === "recover") return recoverFailedResume(ctx, claimed, err);
      ({ info, nodeID } = await relocateResume(ctx, claimed, request, err as Error));
    }
  }
  // From paused too: a reconcile may have reverted the record while the call was under way.
  const resumed = await updateSandbox(ctx.db, sandboxID, ["resuming", "paused"], {
    state: "running",
    node_id: nodeID,
    host_address: info.hostAddress,
    envd_version: info.envdVersion || row.envd_version,
    started_at: new Date(),
    end_at: request.endAt,
    artifact_generation: null,
  });
  if (!resumed) {
    // A node event or a reconcile recorded the resume first, or the sandbox died right after it.
    const current = await getSandbox(ctx.db, sandboxID);
    if (current?.state === "running") return current;
    throw new SandboxNotFoundError(sandboxID);
  }
  await recordStateChange(ctx, "paused", resumed, {
    ...(request.reboot ? { reboot: "true" } : {}),
    ...(nodeID !== claimed.node_id ? { from_node: claimed.node_id, node: nodeID } : {}),
  });
  return resumed;
}

/**
 * After a failed Resume call: the record says where the sandbox is, and the request hears why it
 * is not running. Answers the record when it runs after all (the node had resumed it: a call
 * that timed out, or another API process).
 */
async function recoverFailedResume(ctx: APIContext, claimed: SandboxRow, err: unknown): Promise<SandboxRow> {
  const sandboxID = claimed.sandbox_id;
  if (err instanceof NodeSandboxNotFoundError) {
    await markKilled(ctx, sandboxID, "missing on node");
    throw new SandboxNotFoundError(sandboxID);
  }
  if (err instanceof NodeBusyError) {
    // The node refused before touching it: still paused.
    const reverted = await updateSandbox(ctx.db, sandboxID, ["resuming"], { state: "paused" });
    if (reverted) ctx.catalog.update(sandboxID, reverted);
    throw new CapacityError(`the sandbox's node cannot resume it now (${err.message}); retry in a moment`);
  }
  const settled = await settleFromNode(ctx, claimed, "paused");
  if (!settled) throw new SandboxNotFoundError(sandboxID);
  if (settled.state === "running") return settled;
  if (err instanceof NodeUnavailableError) {
    throw new CapacityError(
      `the sandbox's node is unavailable (${err.message}); retry when node '${claimed.node_id}' is back`,
    );
  }
  if (err instanceof NodeTransitionError) throw stateConflict(sandboxID, settled.state);
  throw err;
}

/** The lifetime an auto-resume grants a sandbox whose record predates recorded lifetimes. */
const DEFAULT_AUTO_RESUME_SECONDS = 300;

/**
 * The client proxy's auto-resume (`SandboxCatalog.resume`): traffic for a paused sandbox created
 * with autoResume resumes it for the lifetime it was created with. Answers its routing entry, or
 * undefined when it cannot run now: unknown, not auto-resumable, between states in another API
 * process, or its node busy (the proxy then answers as for a sandbox it cannot reach).
 */
export async function autoResume(ctx: APIContext, sandboxID: string): Promise<CatalogEntry | undefined> {
  const row = await getSandbox(ctx.db, sandboxID);
  if (!row?.auto_resume) return undefined;
  const seconds = row.timeout_seconds ?? DEFAULT_AUTO_RESUME_SECONDS;
  try {
    const reached = await resumeOrGet(ctx, sandboxID, () => getSandbox(ctx.db, sandboxID), {
      endAt: new Date(Date.now() + seconds * 1000),
      reboot: false,
    });
    return ctx.catalog.entryOf(reached.row);
  } catch (err) {
    if (
      err instanceof SandboxNotFoundError ||
      err instanceof SandboxConflictError ||
      err instanceof CapacityError ||
      err instanceof NodeUnreachableError ||
      err instanceof QuotaExceededError
    ) {
      ctx.logger.info({ sandboxID, reason: err.message }, "auto-resume refused");
      return undefined;
    }
    throw err;
  }
}
