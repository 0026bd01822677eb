import type { Logger } from "@moat/shared";
import { resolveUser, type User, type UserDirectory } from "./auth/users.js";
import type { EnvdState } from "./state.js";

/** What every envd service and route shares: the /init state, the account directory, the logger. */
export interface EnvdContext {
  readonly state: EnvdState;
  readonly users: UserDirectory;
  readonly logger: Logger;
}

/** The user a request acts as (its Basic auth user, else the default user). */
export function requestUser(ctx: EnvdContext, headers: Headers): User {
  return resolveUser(ctx.users, headers.get("authorization"), ctx.state.defaultUser);
}

/**
 * Seconds between keepalive messages on a stream: the client's `Keepalive-Ping-Interval`, else
 * envd's default of 90 s. Bounded so a bad header cannot make a tight loop.
 */
export function keepaliveIntervalMs(headers: Headers): number {
  const seconds = Number(headers.get("keepalive-ping-interval"));
  if (!Number.isFinite(seconds) || seconds <= 0) return 90_000;
  return Math.min(Math.max(seconds, 1), 3600) * 1000;
}
