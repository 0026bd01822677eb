/**
 * Who may reach a sandbox through the proxy. envd's port checks `X-Access-Token` itself, so the proxy
 * guards only what envd cannot: the sandbox's other ports (the traffic access token) and the decision
 * to wake a paused sandbox, which happens before envd is there to ask.
 */
import { createHash, timingSafeEqual } from "node:crypto";
import { type CatalogEntry, ENVD_PORT } from "@moat/shared";
import {
  type ProxyError,
  ResumeDeniedError,
  TrafficTokenInvalidError,
  TrafficTokenMissingError,
} from "./errors.js";

/** Compares secrets in constant time (the digests have equal lengths whatever the inputs). */
export function tokensEqual(given: string, expected: string): boolean {
  const a = createHash("sha256").update(given).digest();
  const b = createHash("sha256").update(expected).digest();
  return timingSafeEqual(a, b);
}

/** A header's single value (Node joins repeated headers with ", "; arrays only for set-cookie). */
export function headerValue(value: string | string[] | undefined): string | undefined {
  return Array.isArray(value) ? value[0] : value;
}

/**
 * The traffic-token check for non-envd ports: undefined when the request may pass.
 * Port 49983 is exempt because envd checks `X-Access-Token` on its own.
 */
export function checkTrafficToken(
  entry: CatalogEntry,
  port: number,
  given: string | undefined,
): ProxyError | undefined {
  if (port === ENVD_PORT || !entry.trafficAccessToken) return undefined;
  if (given === undefined || given === "") return new TrafficTokenMissingError(entry.sandboxID);
  if (!tokensEqual(given, entry.trafficAccessToken)) return new TrafficTokenInvalidError(entry.sandboxID);
  return undefined;
}

/**
 * Whether this request may resume the paused sandbox. A secured sandbox's envd port needs its
 * `X-Access-Token` (or the traffic token); other ports have passed `checkTrafficToken` already, so
 * they resume whenever the sandbox allows auto-resume.
 */
export function checkResumeAllowed(
  entry: CatalogEntry,
  port: number,
  headers: { accessToken: string | undefined; trafficToken: string | undefined },
): ProxyError | undefined {
  if (port !== ENVD_PORT || !entry.envdAccessToken) return undefined;
  const { accessToken, trafficToken } = headers;
  if (accessToken && tokensEqual(accessToken, entry.envdAccessToken)) return undefined;
  if (trafficToken && entry.trafficAccessToken && tokensEqual(trafficToken, entry.trafficAccessToken)) {
    return undefined;
  }
  return new ResumeDeniedError(entry.sandboxID);
}
