/**
 * Where a request goes: pure parsing of the Host and the routing headers (e2b-protocol.md §2.2, §6.4).
 *
 * Two forms name a sandbox and a port:
 * - the host `<port>-<sandboxID>.<anything>` (what `sandbox.getHost(port)` and `uploadUrl()` produce,
 *   and what a browser sends);
 * - the headers `E2b-Sandbox-Id` and `E2b-Sandbox-Port`, which the SDK sends on every envd call. They
 *   are honoured only when the Host is one all sandboxes share: `localhost`, an IP literal, or
 *   `sandbox.<domain>`. On a sandbox host the host wins, so a page served from one sandbox cannot
 *   redirect its own requests to another sandbox by adding headers.
 *
 * A shared host with no routing headers addresses the proxy itself (its `/health`), or, for a
 * signed `/files` URL, the sandbox its signature names (signed-urls.ts).
 */
import { isIP } from "node:net";
import { posix } from "node:path";
import { ENVD_PORT } from "@moat/shared";
import { InvalidRouteError } from "./errors.js";

export const SANDBOX_ID_HEADER = "e2b-sandbox-id";
export const SANDBOX_PORT_HEADER = "e2b-sandbox-port";

const SANDBOX_ID_PATTERN = /^[a-z0-9]+$/;

export interface RouteInput {
  /** The Host header, with or without a port. */
  host: string | undefined;
  /** `E2b-Sandbox-Id`, if sent. */
  sandboxIDHeader: string | undefined;
  /** `E2b-Sandbox-Port`, if sent. */
  portHeader: string | undefined;
}

export type Route =
  /** `signature`: a signed `/files` URL on a shared host (signed-urls.ts), not resolved here. */
  | { kind: "sandbox"; sandboxID: string; port: number; via: "headers" | "host" | "signature" }
  /** A shared host without routing headers: the request is for the proxy itself. */
  | { kind: "proxy" };

/** The host name of a Host header value: no port, no IPv6 brackets, lower case, no trailing dot. */
export function hostnameOf(host: string | undefined): string {
  let name = (host ?? "").trim().toLowerCase();
  if (name.startsWith("[")) {
    const end = name.indexOf("]");
    name = end === -1 ? name.slice(1) : name.slice(1, end);
  } else if (name.split(":").length === 2) {
    name = name.slice(0, name.indexOf(":"));
  }
  return name.endsWith(".") ? name.slice(0, -1) : name;
}

/** Hosts on which the routing headers are honoured (one origin shared by every sandbox). */
export function isSharedHost(hostname: string, domain: string): boolean {
  return hostname === "localhost" || isIP(hostname) !== 0 || hostname === `sandbox.${domain.toLowerCase()}`;
}

/**
 * Resolves a request to a sandbox and port, or to the proxy itself.
 * @throws InvalidRouteError when the request names no sandbox in a form the proxy accepts.
 */
export function resolveRoute(input: RouteInput, domain: string): Route {
  const hostname = hostnameOf(input.host);
  const idHeader = input.sandboxIDHeader?.trim() ?? "";
  const portHeader = input.portHeader?.trim() ?? "";
  const hasHeaders = idHeader !== "" || portHeader !== "";

  if (isSharedHost(hostname, domain)) {
    if (!hasHeaders) return { kind: "proxy" };
    if (idHeader === "")
      throw new InvalidRouteError("Missing header: E2b-Sandbox-Id (E2b-Sandbox-Port is set)");
    if (portHeader === "")
      throw new InvalidRouteError("Missing header: E2b-Sandbox-Port (E2b-Sandbox-Id is set)");
    return {
      kind: "sandbox",
      sandboxID: validSandboxID(idHeader),
      port: validPort(portHeader),
      via: "headers",
    };
  }

  const dot = hostname.indexOf(".");
  const label = dot === -1 ? hostname : hostname.slice(0, dot);
  const dash = label.indexOf("-");
  if (dot <= 0 || dot === hostname.length - 1 || dash <= 0) {
    const shared = `localhost, an IP address or sandbox.${domain}`;
    throw new InvalidRouteError(
      hasHeaders
        ? `The routing headers are honoured only when the Host is ${shared}; the Host '${hostname}' is not of the form <port>-<sandboxID>.${domain}`
        : `The Host '${hostname}' names no sandbox: use <port>-<sandboxID>.${domain}, or send E2b-Sandbox-Id and E2b-Sandbox-Port to ${shared}`,
    );
  }
  return {
    kind: "sandbox",
    sandboxID: validSandboxID(label.slice(dash + 1)),
    port: validPort(label.slice(0, dash)),
    via: "host",
  };
}

export function validSandboxID(id: string): string {
  if (!SANDBOX_ID_PATTERN.test(id)) {
    throw new InvalidRouteError(`Invalid sandbox ID '${id}': it must match ^[a-z0-9]+$`);
  }
  return id;
}

export function validPort(text: string): number {
  const port = /^\d{1,5}$/.test(text) ? Number(text) : Number.NaN;
  if (!(port >= 1 && port <= 65535)) {
    throw new InvalidRouteError(`Invalid sandbox port '${text}': it must be a number from 1 to 65535`);
  }
  return port;
}

/**
 * envd's internal endpoints: they configure (`/init` resets the access token) or freeze the guest
 * for the node, so the edge never relays a client into them.
 */
const RESERVED_ENVD_PATHS = new Set([
  "/init",
  "/freeze",
  "/unfreeze",
  "/fsfreeze",
  "/fsthaw",
  "/collapse",
  "/upgrade",
]);

/**
 * Whether a request target on envd's port is one of envd's internal endpoints. The path is
 * normalised the way a lenient router might (percent-decoding, case, doubled or trailing slashes,
 * dot segments), so that no spelling of `/init` slips through.
 */
export function isReservedEnvdPath(port: number, target: string): boolean {
  if (port !== ENVD_PORT) return false;
  return RESERVED_ENVD_PATHS.has(normalisePath(target));
}

/** The path of a request target (origin or absolute form), normalised for comparison. */
export function normalisePath(target: string): string {
  let path = target;
  if (!path.startsWith("/")) {
    try {
      path = new URL(path).pathname;
    } catch {
      path = `/${path}`;
    }
  }
  const cut = path.search(/[?#]/);
  if (cut !== -1) path = path.slice(0, cut);
  try {
    path = decodeURIComponent(path);
  } catch {
    // A malformed escape: compare the raw spelling, which names no reserved path envd would serve.
  }
  path = posix.normalize(path.replace(/\\/g, "/")).toLowerCase();
  if (path.length > 1 && path.endsWith("/")) path = path.slice(0, -1);
  return path;
}

/**
 * Where a browser asking the bare domain for the dashboard goes: the E2B CLI prints
 * `https://<domain>/dashboard/inspect/sandbox/<id>`, and the dashboard is the API's. Only GET and
 * HEAD of `/dashboard` and below, on the Host `<domain>` itself (never a sandbox's host), and only
 * the path and query are carried over onto `dashboardURL`, so the target's origin is always the API's.
 */
export function dashboardRedirect(
  input: { host: string | undefined; method: string | undefined; target: string | undefined },
  domain: string,
  dashboardURL: string | undefined,
): string | undefined {
  if (!dashboardURL || (input.method !== "GET" && input.method !== "HEAD")) return undefined;
  // The path first: it is cheap, and every proxied request passes here.
  const target = input.target ?? "";
  const rest = target.slice("/dashboard".length);
  if (!target.startsWith("/dashboard") || !(rest === "" || rest.startsWith("/") || rest.startsWith("?"))) {
    return undefined;
  }
  if (hostnameOf(input.host) !== domain.toLowerCase()) return undefined;
  return `${dashboardURL.replace(/\/+$/, "")}${rest}`;
}
