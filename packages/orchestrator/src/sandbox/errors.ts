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

/** The node cannot take another sandbox now: retry later or elsewhere. */
export class NodeBusyError extends Error {
  constructor(reason: string) {
    super(`node busy: ${reason}; retry in a moment`);
    this.name = "NodeBusyError";
  }
}

export class InvalidSandboxConfigError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "InvalidSandboxConfigError";
  }
}
