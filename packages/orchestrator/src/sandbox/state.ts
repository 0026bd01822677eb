/**
 * The states of a sandbox and the moves between them, in one place. A sandbox lives in memory
 * (`Sandbox.state`) and on disk (its record's `state`, sandbox/record.ts), which is what a
 * restarted node goes by (sandbox/reclaim.ts).
 *
 *   pooled ──claim──▶ starting ──▶ running ──▶ pausing ──▶ paused ──▶ resuming ──▶ running
 *                                     ▲           │                      │
 *                                     └───────────┘ (pause failed,       └──▶ paused (resume failed)
 *                                                    the runtime lives)
 *   running ──▶ snapshotting ──▶ running (a snapshot or fork of it taken, or not)
 *   any state but resuming and snapshotting ──▶ stopping (kill) ──▶ gone
 */

/** What a sandbox is for. Only `user` sandboxes are in the registry and have an id a client knows. */
export type SandboxKind =
  /** Made by a create for a team. */
  | "user"
  /** Restored from a template snapshot ahead of time, waiting for a create to claim it. */
  | "pool"
  /** Booted to take a template's snapshot, then released. */
  | "snapshot"
  /** Runs one step of a template build; its writable layer becomes the step's layer. */
  | "build";

export type SandboxState =
  /** Its runtime is being made (slot, network, rootfs, runsc, envd, /init). */
  | "starting"
  /** A pool entry: restored and answering, not handed to anyone yet (/init not sent). */
  | "pooled"
  | "running"
  /** envd froze, the checkpoint is under way. */
  | "pausing"
  /** Holds nothing but its directory: files, and a memory image unless paused without memory. */
  | "paused"
  | "resuming"
  /** Stopped in place while its memory and files are saved for a snapshot or a fork; runs on after. */
  | "snapshotting"
  /**
   * Being killed: its runtime is stopped (the kill answers then), then everything it holds is
   * released in the background. Written to its record before anything stops: after a crash the
   * restart releases it, whatever it was before.
   */
  | "stopping";

/** The states written to a sandbox's record; `resuming` is never written. */
export type RecordState = Extract<
  SandboxState,
  "starting" | "pooled" | "running" | "pausing" | "paused" | "snapshotting" | "stopping"
>;

const NEXT: Readonly<Record<SandboxState, readonly SandboxState[]>> = {
  pooled: ["starting", "stopping"],
  starting: ["running", "stopping"],
  running: ["pausing", "snapshotting", "stopping"],
  // Back to running when the pause failed while the runtime still lived.
  pausing: ["paused", "running", "stopping"],
  paused: ["resuming", "stopping"],
  // Back to paused when the resume failed; a kill waits for the resume to end first.
  resuming: ["running", "paused"],
  // Back to running whatever happened; a kill waits for the snapshot to end first.
  snapshotting: ["running"],
  stopping: [],
};

export function canMove(from: SandboxState, to: SandboxState): boolean {
  return NEXT[from].includes(to);
}

/** A move the table does not allow: a bug in the node, never a client's doing. */
export class IllegalStateChangeError extends Error {
  constructor(
    readonly sandboxID: string,
    readonly from: SandboxState,
    readonly to: SandboxState,
  ) {
    super(`sandbox ${sandboxID}: no move from ${from} to ${to}`);
    this.name = "IllegalStateChangeError";
  }
}
