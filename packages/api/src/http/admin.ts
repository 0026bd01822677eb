/**
 * The operator's credentials: the admin token (`X-Admin-Token`, or `Authorization: Bearer`) guards
 * the admin routes; the metrics token (or the admin token) lets Prometheus scrape /metrics.
 */
import type { Context } from "hono";
import { secretsEqual } from "../auth/secrets.js";
import { UnauthenticatedError } from "../errors.js";

function bearer(c: Context): string | undefined {
  return /^Bearer\s+(\S+)\s*$/i.exec(c.req.header("authorization") ?? "")?.[1];
}

/** Whether the request carries one of `tokens` (unset ones match nothing). */
export function carriesToken(c: Context, tokens: ReadonlyArray<string | undefined>): boolean {
  const given = [c.req.header("x-admin-token"), bearer(c)];
  return tokens.some((token) => token !== undefined && given.some((g) => secretsEqual(token, g)));
}

/** 401 unless the request carries the admin token. */
export function requireAdminToken(c: Context, adminToken: string): void {
  if (!carriesToken(c, [adminToken])) throw new UnauthenticatedError("missing or wrong X-Admin-Token");
}

/** 401 unless the request may read /metrics. */
export function requireMetricsToken(
  c: Context,
  tokens: { metricsToken: string | undefined; adminToken: string | undefined },
): void {
  if (!tokens.metricsToken && !tokens.adminToken) {
    throw new UnauthenticatedError(
      "/metrics is off: set MOAT_METRICS_TOKEN (or MOAT_ADMIN_TOKEN) and scrape with Authorization: Bearer <token>",
    );
  }
  if (!carriesToken(c, [tokens.metricsToken, tokens.adminToken])) {
    throw new UnauthenticatedError(
      "/metrics needs Authorization: Bearer <token> with the metrics token (MOAT_METRICS_TOKEN) or the admin token",
    );
  }
}
