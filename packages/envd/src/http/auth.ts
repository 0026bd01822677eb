import { ConnectError } from "@connectrpc/connect";
import type { MiddlewareHandler } from "hono";
import { type FileOperation, fileSignature, tokenMatches } from "../auth/access-token.js";
import { requireUser, resolveUser, type User } from "../auth/users.js";
import type { EnvdContext } from "../context.js";
import type { HTTPContext, HTTPEnv } from "./bindings.js";
import { errorResponse, HTTPError } from "./errors.js";

/**
 * Routes reachable without `X-Access-Token` on a secured envd: health, /init (the orchestrator's
 * own call) and /files, which checks the header or a URL signature itself.
 */
const EXEMPT = new Set([
  "GET /health",
  "HEAD /health",
  "POST /init",
  "GET /files",
  "HEAD /files",
  "POST /files",
]);

/** Once `/init` set an access token, every other route needs it in `X-Access-Token`. */
export function accessTokenMiddleware(ctx: EnvdContext): MiddlewareHandler<HTTPEnv> {
  return async (c, next) => {
    const expected = ctx.state.accessToken;
    if (expected === undefined || EXEMPT.has(`${c.req.method} ${c.req.path}`)) return next();
    if (!tokenMatches(expected, c.req.header("x-access-token"))) {
      return errorResponse(
        c,
        401,
        "unauthorized access, please provide a valid access token or method signing if supported",
      );
    }
    return next();
  };
}

/** How a `/files` request was let in: an unsecured envd, the access token, or a signed URL. */
export type FileAccess = "open" | "token" | "signature";

/**
 * The access check of `/files` on a secured envd: a matching `X-Access-Token`, or else a valid
 * `signature` (and unexpired `signature_expiration`) over the path and username exactly as they
 * appear in the query, as the SDK's `downloadUrl`/`uploadUrl` sign them.
 */
export function checkFileAccess(ctx: EnvdContext, c: HTTPContext, operation: FileOperation): FileAccess {
  const token = ctx.state.accessToken;
  if (token === undefined) return "open";
  const header = c.req.header("x-access-token");
  if (header) {
    if (!tokenMatches(token, header))
      throw new HTTPError(401, "access token present in header but does not match");
    return "token";
  }
  const signature = c.req.query("signature");
  if (!signature) throw new HTTPError(401, "missing signature query parameter");
  const expirationText = c.req.query("signature_expiration");
  let expiration: number | undefined;
  if (expirationText !== undefined) {
    if (!/^-?\d{1,15}$/.test(expirationText)) throw new HTTPError(401, "invalid signature_expiration");
    expiration = Number(expirationText);
  }
  const expected = fileSignature(
    c.req.query("path") ?? "",
    operation,
    c.req.query("username") ?? "",
    token,
    expiration,
  );
  if (!tokenMatches(expected, signature)) throw new HTTPError(401, "invalid signature");
  if (expiration !== undefined && expiration < Math.floor(Date.now() / 1000)) {
    throw new HTTPError(401, "signature is already expired");
  }
  return "signature";
}

/**
 * The user a `/files` call acts as. A signed URL acts as exactly the user it was signed for (its
 * `username`, empty meaning the default user): the URL is its holder's only credential, so an
 * `Authorization` header must not pick another user. Otherwise as `restUser`.
 */
export function fileUser(
  ctx: EnvdContext,
  c: HTTPContext,
  via: FileAccess,
  username: string | undefined,
): User {
  if (via !== "signature") return restUser(ctx, c, username);
  try {
    return requireUser(ctx.users, username || ctx.state.defaultUser);
  } catch (err) {
    throw new HTTPError(401, err instanceof ConnectError ? err.rawMessage : String(err));
  }
}

/**
 * The user a REST call acts as: `username` (query or body) when given, else the Basic auth user,
 * else the default user. An unknown user is 401.
 */
export function restUser(ctx: EnvdContext, c: HTTPContext, username: string | undefined): User {
  try {
    if (username) return requireUser(ctx.users, username);
    return resolveUser(ctx.users, c.req.header("authorization"), ctx.state.defaultUser);
  } catch (err) {
    throw new HTTPError(401, err instanceof ConnectError ? err.rawMessage : String(err));
  }
}
