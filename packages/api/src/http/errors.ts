/**
 * The HTTP edge of errors: the one place domain errors become statuses. Every error body is
 * `{code, message}` with `code` equal to the status, because the SDK reads `body.code` (not the
 * status) to tell "not found" from other failures. Unexpected errors are logged with their cause
 * and answered as a bare 500, so internals never reach the client.
 */
import type { Logger } from "@moat/shared";
import type { Context } from "hono";
import { HTTPException } from "hono/http-exception";
import type { ContentfulStatusCode } from "hono/utils/http-status";
import type { ZodError } from "zod";
import {
  BuildNotFoundError,
  CapacityError,
  ConflictError,
  CredentialNotFoundError,
  ForbiddenError,
  InvalidRequestError,
  NodeNotFoundError,
  NodeUnreachableError,
  NotSupportedError,
  QuotaExceededError,
  RateLimitedError,
  SandboxConflictError,
  SandboxNotFoundError,
  SnapshotFailedError,
  TeamNotFoundError,
  TemplateNotFoundError,
  TooLargeError,
  UnauthenticatedError,
  VolumeFullError,
  VolumeNotFoundError,
} from "../errors.js";
import { NodeUnavailableError } from "../orchestrator/node-client.js";

/** How long a client should wait before retrying a create that found every node busy. */
const CAPACITY_RETRY_AFTER_SECONDS = 1;

export interface ErrorBody {
  code: number;
  message: string;
  /** The request's id, as in the X-Request-Id header: what to quote to the operator. */
  requestId?: string;
}

export function errorResponse(c: Context, status: ContentfulStatusCode, message: string): Response {
  const requestId: string | undefined = c.get("requestId");
  return c.json({ code: status, message, requestId } satisfies ErrorBody, status);
}

/** The status and client message of a thrown error; undefined for an unexpected one. */
export function statusOf(err: unknown): { status: ContentfulStatusCode; message: string } | undefined {
  if (err instanceof InvalidRequestError) return { status: 400, message: err.message };
  if (err instanceof UnauthenticatedError) return { status: 401, message: err.message };
  if (err instanceof SandboxNotFoundError) return { status: 404, message: err.message };
  if (err instanceof ForbiddenError) return { status: 403, message: err.message };
  if (err instanceof TemplateNotFoundError) return { status: 404, message: err.message };
  if (err instanceof BuildNotFoundError) return { status: 404, message: err.message };
  if (err instanceof TeamNotFoundError) return { status: 404, message: err.message };
  if (err instanceof CredentialNotFoundError) return { status: 404, message: err.message };
  if (err instanceof NodeNotFoundError) return { status: 404, message: err.message };
  if (err instanceof VolumeNotFoundError) return { status: 404, message: err.message };
  if (err instanceof VolumeFullError) return { status: 507, message: err.message };
  if (err instanceof NodeUnreachableError) return { status: 503, message: err.message };
  // The node could not do it now (unreachable, or it failed and kept the sandbox as it was): the
  // client may retry, and the node's reason says what happened.
  if (err instanceof NodeUnavailableError) return { status: 503, message: err.message };
  if (err instanceof SandboxConflictError) return { status: 409, message: err.message };
  if (err instanceof ConflictError) return { status: 409, message: err.message };
  if (err instanceof TooLargeError) return { status: 413, message: err.message };
  if (err instanceof NotSupportedError) return { status: 501, message: err.message };
  if (err instanceof SnapshotFailedError) return { status: 500, message: err.message };
  if (err instanceof CapacityError) return { status: 429, message: err.message };
  if (err instanceof QuotaExceededError) return { status: 429, message: err.message };
  if (err instanceof RateLimitedError) return { status: 429, message: err.message };
  if (err instanceof HTTPException) {
    const status = err.status as ContentfulStatusCode;
    return { status, message: MESSAGES[status] ?? (err.message || "request failed") };
  }
  return undefined;
}

/** Hono's `onError`: known errors get their status, anything else a logged 500. */
export function onError(logger: Logger) {
  return (err: Error, c: Context): Response => {
    const known = statusOf(err);
    if (known) {
      if (known.status >= 500) logger.warn({ err, path: c.req.path }, known.message);
      // The SDKs retry a 429 that carries whole seconds in Retry-After: a busy node is brief.
      if (err instanceof CapacityError) c.header("Retry-After", String(CAPACITY_RETRY_AFTER_SECONDS));
      if (err instanceof RateLimitedError) c.header("Retry-After", String(err.retryAfterSeconds));
      return errorResponse(c, known.status, known.message);
    }
    logger.error({ err, method: c.req.method, path: c.req.path }, "request failed");
    return errorResponse(c, 500, "internal error");
  };
}

/** What the client reads for a request that failed validation: every problem, with its place. */
export function validationMessage(error: ZodError, target: string): string {
  const where = TARGETS[target] ?? target;
  const problems = error.issues.map((issue) => {
    const path = issue.path.map(String).join(".");
    let text = issue.message;
    if (issue.code === "invalid_type" && / received undefined$/.test(text)) {
      text = `required (${issue.expected})`;
    } else if (issue.code === "unrecognized_keys") {
      text = `unknown field${issue.keys.length > 1 ? "s" : ""} ${issue.keys.map((k) => `'${k}'`).join(", ")}`;
    }
    return path ? `${path}: ${text}` : text;
  });
  return `invalid ${where}: ${problems.join("; ")}`;
}

const TARGETS: Record<string, string> = {
  json: "request body",
  query: "query parameters",
  param: "path parameters",
  header: "headers",
};

/** Clearer words for what Hono's validators throw. */
const MESSAGES: Partial<Record<number, string>> = {
  415: "unsupported media type: send the body as application/json",
};
