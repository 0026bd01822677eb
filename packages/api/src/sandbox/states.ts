/**
 * The record states of a sandbox, grouped by what requests may do with them and by what the public
 * API shows. The transitions themselves are conditional updates (`updateSandbox` with the states
 * a change may start from), so two requests or a request and a node event cannot undo each other.
 *
 *   starting ─→ running ⇄ pausing ─→ paused ⇄ resuming ─→ running
 *   any live state ─→ killing ─→ killed
 *
 * pausing and resuming last as long as the node's Pause or Resume call. Until it answers, the
 * sandbox shows as it was (pausing as running, resuming as paused), because a failed call leaves it
 * so; requests that would change it meanwhile get 409.
 */
import type { SandboxRowState } from "../db/schema.js";
import { SandboxConflictError } from "../errors.js";

/** Every state a sandbox can leave for killed: it still exists for its team. */
export const LIVE_STATES: readonly SandboxRowState[] = [
  "starting",
  "running",
  "pausing",
  "paused",
  "resuming",
  "killing",
];

/** Shown as "running". */
export const RUNNING_STATES: readonly SandboxRowState[] = ["running", "pausing"];
/** Shown as "paused". */
export const PAUSED_STATES: readonly SandboxRowState[] = ["paused", "resuming"];
/** What get, list and the other read routes show. */
export const VISIBLE_STATES: readonly SandboxRowState[] = [...RUNNING_STATES, ...PAUSED_STATES];

export type PublicState = "running" | "paused";

export function publicState(state: SandboxRowState): PublicState {
  return PAUSED_STATES.includes(state) ? "paused" : "running";
}

const DESCRIPTIONS: Partial<Record<SandboxRowState, string>> = {
  starting: "starting",
  pausing: "being paused",
  resuming: "being resumed",
  killing: "being killed",
};

/** The 409 for a request that found the sandbox between states. */
export function stateConflict(sandboxID: string, state: SandboxRowState): SandboxConflictError {
  return new SandboxConflictError(sandboxID, DESCRIPTIONS[state] ?? "changing state");
}
