/**
 * The API's domain errors. Code below the HTTP edge throws these; `http/errors.ts` alone turns them
 * into statuses and `{code, message}` bodies. The message of each is safe to show to the client.
 */

/** The request is malformed or breaks a rule (400). */
export class InvalidRequestError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "InvalidRequestError";
  }
}

/** No credentials, or credentials that match nothing (401). */
export class UnauthenticatedError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "UnauthenticatedError";
  }
}

/**
 * The sandbox does not exist for this team: missing, killed, or another team's. All three read the
 * same, so that a team cannot learn whether another team's sandbox id exists (404).
 */
export class SandboxNotFoundError extends Error {
  constructor(
    readonly sandboxID: string,
    message = `sandbox '${sandboxID}' not found`,
  ) {
    super(message);
    this.name = "SandboxNotFoundError";
  }
}

/**
 * The template does not exist for this team (missing, or another team's private one), or has no
 * build a sandbox can start from (404).
 */
export class TemplateNotFoundError extends Error {
  constructor(
    readonly templateID: string,
    message = `template '${templateID}' not found`,
  ) {
    super(message);
    this.name = "TemplateNotFoundError";
  }
}

/** The template has no such build (404). */
export class BuildNotFoundError extends Error {
  constructor(readonly buildID: string) {
    super(`build '${buildID}' not found`);
    this.name = "BuildNotFoundError";
  }
}

/** The caller may see the resource but not do this with it, e.g. another team's template (403). */
export class ForbiddenError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "ForbiddenError";
  }
}

/**
 * The resource's state does not allow the request (409): a build that was already started, a
 * template that running sandboxes still use.
 */
export class ConflictError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "ConflictError";
  }
}

/** A body (an uploaded file) larger than the API accepts (413). */
export class TooLargeError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "TooLargeError";
  }
}

/**
 * The sandbox's state does not allow the request (409): it is between states (starting, being
 * paused, being killed; try again in a moment), or already where the request would take it (a
 * pause of a paused sandbox: the SDK reads `code: 409` there as "already paused").
 */
export class SandboxConflictError extends Error {
  constructor(
    readonly sandboxID: string,
    readonly state: string,
    message = `sandbox '${sandboxID}' is ${state}; try again in a moment`,
  ) {
    super(message);
    this.name = "SandboxConflictError";
  }
}

/** A node could not snapshot (or fork) a sandbox; nothing of it is left and the sandbox runs on (500). */
export class SnapshotFailedError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "SnapshotFailedError";
  }
}

/** A feature this moat version does not have yet (501). */
export class NotSupportedError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "NotSupportedError";
  }
}

/** No node can take the sandbox now: all are full, starting too many, or unreachable (429, retry). */
export class CapacityError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "CapacityError";
  }
}

/**
 * The team holds all its quota allows of something (running or paused sandboxes, builds in
 * flight) (429, without Retry-After: the SDK throws RateLimitError at once, as with E2B, since
 * waiting alone frees nothing).
 */
export class QuotaExceededError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "QuotaExceededError";
  }
}

/** The API key made more requests than its rate allows (429 with Retry-After: the SDK retries). */
export class RateLimitedError extends Error {
  constructor(
    message: string,
    readonly retryAfterSeconds: number,
  ) {
    super(message);
    this.name = "RateLimitedError";
  }
}

/**
 * The volume does not exist for this team (missing, being deleted, or another team's), or a path
 * in it does not exist (404).
 */
export class VolumeNotFoundError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "VolumeNotFoundError";
  }
}

/** A volume is full: the write did not fit its size (507, as envd answers a full disk). */
export class VolumeFullError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "VolumeFullError";
  }
}

/** The node a request needs cannot be reached now (503: retry). */
export class NodeUnreachableError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "NodeUnreachableError";
  }
}

/** No team has that id (404; admin routes only). */
export class NodeNotFoundError extends Error {
  constructor(readonly nodeID: string) {
    super(`node '${nodeID}' not found: see GET /nodes (moat node list) for the nodes this API knows`);
    this.name = "NodeNotFoundError";
  }
}

export class TeamNotFoundError extends Error {
  constructor(readonly teamID: string) {
    super(`team '${teamID}' not found`);
    this.name = "TeamNotFoundError";
  }
}

/** The team has no API key or access token with that id: missing, revoked, or another team's (404). */
export class CredentialNotFoundError extends Error {
  constructor(kind: "API key" | "access token", id: string) {
    super(`${kind} '${id}' not found`);
    this.name = "CredentialNotFoundError";
  }
}
