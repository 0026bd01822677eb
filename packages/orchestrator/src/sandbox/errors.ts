/** Domain errors of the sandbox lifecycle; the RPC edge maps each to a status code. */
export class SandboxNotFoundError extends Error {
  constructor(readonly sandboxID: string) {
    super(`sandbox '${sandboxID}' not found on this node`);
    this.name = "SandboxNotFoundError";
  }
}

export class SandboxExistsError extends Error {
  constructor(readonly sandboxID: string) {
    super(`sandbox '${sandboxID}' already exists on this node`);
    this.name = "SandboxExistsError";
  }
}

export class TemplateNotFoundError extends Error {
  constructor(readonly templateID: string) {
    super(`template '${templateID}' is not available on this node`);
    this.name = "TemplateNotFoundError";
  }
}

/** No such snapshot on this node for the team (another team's reads the same). */
export class SnapshotNotFoundError extends Error {
  constructor(readonly snapshotID: string) {
    super(`snapshot '${snapshotID}' not found on this node`);
    this.name = "SnapshotNotFoundError";
  }
}

export class SnapshotExistsError extends Error {
  constructor(readonly snapshotID: string) {
    super(`snapshot '${snapshotID}' already exists on this node`);
    this.name = "SnapshotExistsError";
  }
}

/** The node cannot take another sandbox now: retry later or elsewhere. */
export class NodeBusyError extends Error {
  constructor(reason: string) {
    super(`node busy: ${reason}; retry in a moment`);
    this.name = "NodeBusyError";
  }
}

/** A create or resume waited longer than the node lets one wait for its turn (create-queue.ts). */
export class CreateQueueTimeoutError extends NodeBusyError {
  constructor(waitedMs: number, running: number, waiting: number) {
    super(
      `waited ${Math.round(waitedMs / 1000)} s for a turn to start (${running} starting, ${waiting} more waiting)`,
    );
    this.name = "CreateQueueTimeoutError";
  }
}

export class InvalidSandboxConfigError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "InvalidSandboxConfigError";
  }
}

/** The sandbox is not in the state the operation needs (pause a paused one, resume a running one). */
export class SandboxStateError extends Error {
  constructor(
    readonly sandboxID: string,
    readonly state: string,
    operation: string,
  ) {
    super(`cannot ${operation} sandbox '${sandboxID}' while it is ${state}`);
    this.name = "SandboxStateError";
  }
}

/** A pause failed before anything was lost: the sandbox is still running. */
export class PauseFailedError extends Error {
  constructor(
    readonly sandboxID: string,
    reason: string,
  ) {
    super(`pausing sandbox '${sandboxID}' failed (${reason}); it is still running`);
    this.name = "PauseFailedError";
  }
}

/** A snapshot (or fork) failed; nothing of it is left, and the sandbox carries on. */
export class SnapshotFailedError extends Error {
  constructor(
    readonly sandboxID: string,
    reason: string,
  ) {
    super(`snapshotting sandbox '${sandboxID}' failed (${reason}); it is still running, try again`);
    this.name = "SnapshotFailedError";
  }
}

/** A resume failed; everything it took was released and the sandbox is still paused. */
export class ResumeFailedError extends Error {
  constructor(
    readonly sandboxID: string,
    reason: string,
  ) {
    super(`resuming sandbox '${sandboxID}' failed (${reason}); it is still paused, try again`);
    this.name = "ResumeFailedError";
  }
}

/**
 * A resume named a published pause the artifact store does not have (removed after a resume
 * elsewhere, or unpublished): only the node that paused it can resume it.
 */
export class PublishedPauseMissingError extends Error {
  constructor(
    readonly sandboxID: string,
    readonly generation: number,
    why = "it is not in the artifact store",
  ) {
    super(
      `sandbox ${sandboxID}: pause ${generation} cannot be fetched here (${why}); only the node that paused it can resume it`,
    );
    this.name = "PublishedPauseMissingError";
  }
}
