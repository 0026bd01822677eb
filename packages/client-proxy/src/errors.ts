/**
 * Every answer the proxy gives on its own behalf (instead of the sandbox's) is one of these typed
 * errors. Routing, catalog and forwarding code throw or return them; only the transport edge
 * (`server.ts`, `forward.ts`) renders them, as JSON for programs and as a small HTML page for browsers.
 *
 * The JSON bodies are the ones E2B's proxy sends (e2b-protocol.md §6.4): the SDK reads a 502 from
 * envd's `/health` as "sandbox not running", so the status codes are part of the wire contract.
 */
import { type IncomingMessage, STATUS_CODES } from "node:http";
import { REQUEST_ID_HEADER, requestIdFrom } from "@moat/shared";

/** The header carrying a sandbox's traffic access token on non-envd ports. */
export const TRAFFIC_ACCESS_TOKEN_HEADER = "e2b-traffic-access-token";

type JSONBody = Record<string, string | number>;

export abstract class ProxyError extends Error {
  abstract readonly status: number;
  /** A short title for the HTML page. */
  abstract readonly title: string;

  /** The JSON body sent to programs; `code` repeats the HTTP status, as E2B's proxy does. */
  abstract body(): JSONBody;
}

/** The request names no sandbox the proxy can parse (bad host, bad or missing routing headers). */
export class InvalidRouteError extends ProxyError {
  readonly status = 400;
  readonly title = "Bad Sandbox Address";

  body(): JSONBody {
    return { message: this.message, code: this.status };
  }
}

/** GET /metrics without the operator's metrics token. */
export class MetricsUnauthorizedError extends ProxyError {
  readonly status = 401;
  readonly title = "Unauthorized";

  body(): JSONBody {
    return { message: this.message, code: this.status };
  }
}

/** A `/files` URL on the shared address that is unsigned, or whose signature fits no sandbox or expired. */
export class FileURLUnauthorizedError extends ProxyError {
  readonly status = 401;
  readonly title = "Unauthorized";

  body(): JSONBody {
    return { message: this.message, code: this.status };
  }
}

/**
 * The bytes on the connection are not an HTTP request Node can parse (400), or its headers are too
 * large (431), or it did not arrive in time (408), or it is a CONNECT, which the proxy does not
 * tunnel (405). Nothing was routed: there is no sandbox to name.
 */
export class MalformedRequestError extends ProxyError {
  readonly title = "Malformed Request";

  constructor(
    readonly status: 400 | 405 | 408 | 431,
    message: string,
  ) {
    super(message);
  }

  body(): JSONBody {
    return { message: this.message, code: this.status };
  }
}

/** The catalog has no running sandbox by that ID (unknown, killed, or paused without auto-resume). */
export class SandboxNotFoundError extends ProxyError {
  readonly status = 502;
  readonly title = "Sandbox Not Found";

  constructor(readonly sandboxID: string) {
    super("The sandbox was not found");
  }

  body(): JSONBody {
    return { message: this.message, sandboxId: this.sandboxID, code: this.status };
  }
}

/** The sandbox is starting or stopping (or a pause/resume is under way): retrying soon will work. */
export class SandboxTransitioningError extends ProxyError {
  readonly status = 409;
  readonly title = "Sandbox Is Transitioning";

  constructor(readonly sandboxID: string) {
    super("The sandbox is still transitioning. Try again in a moment.");
  }

  body(): JSONBody {
    return { message: this.message, sandboxId: this.sandboxID, code: this.status };
  }
}

/** The sandbox is paused and the request may not resume it (no token for a secured sandbox). */
export class ResumeDeniedError extends ProxyError {
  readonly status = 403;
  readonly title = "Sandbox Is Paused";

  constructor(readonly sandboxID: string) {
    super("The sandbox is paused; resuming it through the proxy requires the sandbox's access token");
  }

  body(): JSONBody {
    return { message: this.message, sandboxId: this.sandboxID, code: this.status };
  }
}

/**
 * envd's control surface (`/init`, `/freeze`, …) configures and freezes the guest for the node; it is
 * never part of the data plane. The sandbox ID stays out of the body: the caller learns nothing it
 * did not send.
 */
export class ReservedPathError extends ProxyError {
  readonly status = 404;
  readonly title = "Reserved Endpoint";

  constructor(readonly path: string) {
    super(
      "This endpoint is reserved for the moat control plane and is not reachable through the sandbox URL",
    );
  }

  body(): JSONBody {
    return { message: this.message, path: this.path, code: this.status };
  }
}

export class TrafficTokenMissingError extends ProxyError {
  readonly status = 403;
  readonly title = "Traffic Access Token Missing";

  constructor(readonly sandboxID: string) {
    super(
      `Sandbox is secured with traffic access token. Token header '${TRAFFIC_ACCESS_TOKEN_HEADER}' is missing`,
    );
  }

  body(): JSONBody {
    return { sandboxId: this.sandboxID, message: this.message, code: this.status };
  }
}

export class TrafficTokenInvalidError extends ProxyError {
  readonly status = 403;
  readonly title = "Traffic Access Token Invalid";

  constructor(readonly sandboxID: string) {
    super(
      `Sandbox is secured with traffic access token. Provided token in header '${TRAFFIC_ACCESS_TOKEN_HEADER}' is invalid`,
    );
  }

  body(): JSONBody {
    return { sandboxId: this.sandboxID, message: this.message, code: this.status };
  }
}

/** The sandbox runs, but nothing accepts connections on the port (ECONNREFUSED upstream). */
export class PortClosedError extends ProxyError {
  readonly status = 502;
  readonly title = "Port Not Open";

  constructor(
    readonly sandboxID: string,
    readonly port: number,
  ) {
    super("The sandbox is running but port is not open");
  }

  body(): JSONBody {
    return { sandboxId: this.sandboxID, message: this.message, port: this.port, code: this.status };
  }
}

/** The sandbox's address did not answer at all (timeout, unreachable): the node or netns is gone. */
export class UpstreamUnreachableError extends ProxyError {
  readonly status = 502;
  readonly title = "Sandbox Unreachable";

  constructor(
    readonly sandboxID: string,
    readonly port: number,
  ) {
    super("The sandbox is not reachable");
  }

  body(): JSONBody {
    return { sandboxId: this.sandboxID, message: this.message, port: this.port, code: this.status };
  }
}

/** More concurrent requests and tunnels to one sandbox than the proxy admits. */
export class TooManyConnectionsError extends ProxyError {
  readonly status = 429;
  readonly title = "Too Many Connections";

  constructor(
    readonly sandboxID: string,
    readonly limit: number,
  ) {
    super(`The sandbox has too many concurrent incoming connections (limit: ${limit})`);
  }

  body(): JSONBody {
    return {
      sandboxId: this.sandboxID,
      message: this.message,
      code: this.status,
      connectionLimit: this.limit,
    };
  }
}

/** A request to a node proxy without the node token, or with a wrong one. */
export class NodeTokenError extends ProxyError {
  readonly status = 401;
  readonly title = "Unauthorized";

  constructor(presented: boolean) {
    super(
      `${presented ? "Wrong" : "Missing"} node token: the node proxy serves only moat's own components, which send X-Moat-Node-Token with the deployment's MOAT_NODE_TOKEN`,
    );
  }

  body(): JSONBody {
    return { message: this.message, code: this.status };
  }
}

/** The routing catalog (Redis) cannot be read now; the proxy reconnects by itself. */
export class CatalogUnavailableError extends ProxyError {
  readonly status = 503;
  readonly title = "Routing Catalog Unavailable";

  constructor(detail: string) {
    super(`The proxy cannot read the routing catalog (${detail}); try again in a moment`);
  }

  body(): JSONBody {
    return { message: this.message, code: this.status };
  }
}

/** Anything unexpected (a catalog failure, a bug). The cause is logged, never sent. */
export class InternalProxyError extends ProxyError {
  readonly status = 500;
  readonly title = "Proxy Error";

  constructor(cause: unknown) {
    super("The sandbox proxy failed to handle the request", { cause });
  }

  body(): JSONBody {
    return { message: this.message, code: this.status };
  }
}

/** A rendered error: status, headers and body bytes, for a ServerResponse or a raw socket. */
export interface RenderedError {
  status: number;
  headers: Record<string, string | number>;
  body: Buffer;
}

/** Browsers (whatever asks for HTML) get a page; everything else gets JSON. */
export function wantsHTML(accept: string | undefined): boolean {
  return accept !== undefined && /\btext\/html\b/i.test(accept);
}

/**
 * A request's id: its client's well-formed X-Request-Id, else one made for it; the same for the
 * error body and the proxy's log line about it.
 */
export function requestIdOf(req: IncomingMessage | undefined): string {
  if (!req) return requestIdFrom(undefined);
  let id = requestIds.get(req);
  if (id === undefined) {
    const presented = req.headers[REQUEST_ID_HEADER];
    id = requestIdFrom(typeof presented === "string" ? presented : undefined);
    requestIds.set(req, id);
  }
  return id;
}

const requestIds = new WeakMap<IncomingMessage, string>();

/** The error's answer; `requestId` (see requestIdOf) goes in its body and X-Request-Id header. */
export function renderError(error: ProxyError, html: boolean, requestId?: string): RenderedError {
  const fields = requestId === undefined ? error.body() : { ...error.body(), requestId };
  const body = html ? Buffer.from(htmlPage(error, fields)) : Buffer.from(JSON.stringify(fields));
  return {
    status: error.status,
    headers: {
      "content-type": html ? "text/html; charset=utf-8" : "application/json; charset=utf-8",
      "content-length": body.length,
      "cache-control": "no-store",
      ...(requestId === undefined ? {} : { [REQUEST_ID_HEADER]: requestId }),
    },
    body,
  };
}

/**
 * The same answer as a complete HTTP/1.1 response, for sockets taken over by an `upgrade` or
 * failed by the parser. The answer to a HEAD has no body (the client would read it as garbage).
 */
export function rawHTTPResponse(rendered: RenderedError, method?: string): Buffer {
  const lines = [`HTTP/1.1 ${rendered.status} ${STATUS_CODES[rendered.status] ?? ""}`];
  for (const [name, value] of Object.entries(rendered.headers)) lines.push(`${name}: ${value}`);
  lines.push("connection: close", "", "");
  const head = Buffer.from(lines.join("\r\n"));
  return method === "HEAD" ? head : Buffer.concat([head, rendered.body]);
}

function escapeHTML(text: string): string {
  return text.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

function htmlPage(error: ProxyError, fields: JSONBody): string {
  const details = Object.entries(fields)
    .filter(([key]) => key !== "message")
    .map(([key, value]) => `<dt>${escapeHTML(key)}</dt><dd>${escapeHTML(String(value))}</dd>`)
    .join("");
  return `<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<title>${escapeHTML(error.title)}</title>
<style>body{font-family:system-ui,sans-serif;max-width:40rem;margin:4rem auto;padding:0 1rem;color:#1a1a1a}
h1{font-size:1.25rem;color:#b91c1c}dl{display:grid;grid-template-columns:max-content 1fr;gap:.25rem 1rem;
font-family:ui-monospace,monospace;font-size:.875rem;background:#f6f6f6;padding:1rem;border-radius:6px}
dt{color:#6b7280}dd{margin:0}</style></head>
<body><main><h1>${escapeHTML(error.title)}</h1><p>${escapeHTML(error.message)}</p><dl>${details}</dl></main></body>
</html>
`;
}
