import { Code, ConnectError } from "@connectrpc/connect";
import type { Context } from "hono";
import type { ContentfulStatusCode } from "hono/utils/http-status";

/** An error that becomes an HTTP answer `{code, message}` with `status`. */
export class HTTPError extends Error {
  constructor(
    readonly status: ContentfulStatusCode,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = "HTTPError";
  }
}

/** envd's REST error body, as the SDK reads it: `{code, message}` with the HTTP status as code. */
export function errorResponse(c: Context, status: ContentfulStatusCode, message: string): Response {
  // A route may fail after it prepared a file answer; those headers would garble the JSON.
  for (const name of ["Content-Length", "Content-Encoding", "Content-Disposition"]) c.header(name, undefined);
  return c.json({ code: status, message }, status);
}

const CONNECT_STATUS: Partial<Record<Code, ContentfulStatusCode>> = {
  [Code.InvalidArgument]: 400,
  [Code.FailedPrecondition]: 400,
  [Code.OutOfRange]: 400,
  [Code.Unauthenticated]: 401,
  [Code.PermissionDenied]: 403,
  [Code.NotFound]: 404,
  [Code.AlreadyExists]: 409,
  [Code.ResourceExhausted]: 507,
};

/**
 * Turns anything a route threw into an HTTPError: shared helpers throw ConnectErrors (unknown
 * user, NUL in a path) and fs calls throw errno errors; `what` prefixes the message of the latter.
 */
export function toHTTPError(err: unknown, what = "error"): HTTPError {
  if (err instanceof HTTPError) return err;
  if (err instanceof ConnectError) return new HTTPError(CONNECT_STATUS[err.code] ?? 500, err.rawMessage);
  const code = (err as NodeJS.ErrnoException | undefined)?.code;
  const message = err instanceof Error ? err.message : String(err);
  switch (code) {
    case "ECONNRESET":
    case "ECONNABORTED":
    case "ERR_STREAM_PREMATURE_CLOSE":
      // Nobody is left to read this answer; it only keeps a client hang-up out of the error log.
      return new HTTPError(400, "the client closed the connection before the request was complete", {
        cause: err,
      });
    case "ENOSPC":
    case "EDQUOT":
    case "EFBIG":
      return new HTTPError(507, "not enough disk space available", { cause: err });
    case "ENOENT":
      return new HTTPError(404, `${what}: no such file or directory`, { cause: err });
    case "EACCES":
    case "EPERM":
    case "EROFS":
      return new HTTPError(403, `${what}: permission denied`, { cause: err });
    case "ENOTDIR":
    case "EISDIR":
    case "EINVAL":
    case "ENAMETOOLONG":
    case "ELOOP":
    case "EEXIST":
      return new HTTPError(400, `${what}: ${message}`, { cause: err });
    default:
      return new HTTPError(500, `${what}: ${message}`, { cause: err });
  }
}
