/**
 * Moves bytes between a client and a sandbox port, HTTP/1.1 on both sides.
 *
 * - Bodies stream both ways with backpressure and no buffering: envd's Connect server-streams
 *   (process output, watchDir), NDJSON and SSE reach the client chunk by chunk, and uploads reach the
 *   sandbox as they arrive. Response headers are flushed as soon as the sandbox sends them, because a
 *   stream may send headers long before its first message.
 * - Hop-by-hop headers (RFC 9110 §7.6.1, and whatever `Connection` names) stop here; Node frames each
 *   side itself (Content-Length when the sandbox sent one, chunked otherwise).
 * - `Upgrade` requests (WebSocket and others) become a tunnel: once the sandbox answers 101, the two
 *   sockets are piped to each other until either side closes.
 * - Failures propagate: a client that goes away destroys the upstream request (the sandbox sees its
 *   connection close, so a Connect stream is cancelled), and a sandbox that resets mid-response
 *   destroys the client's response, which the client sees as a truncated body, never as a clean end.
 */
import http, { type IncomingHttpHeaders, type IncomingMessage, type OutgoingHttpHeaders } from "node:http";
import { isIPv6, type Socket } from "node:net";
import { pipeline } from "node:stream";
import {
  PortClosedError,
  type ProxyError,
  rawHTTPResponse,
  renderError,
  requestIdOf,
  TRAFFIC_ACCESS_TOKEN_HEADER,
  UpstreamUnreachableError,
  wantsHTML,
} from "./errors.js";
import { SANDBOX_ID_HEADER, SANDBOX_PORT_HEADER } from "./routing.js";

/** Where one request goes: a sandbox's port at its host-side address. */
export interface Upstream {
  sandboxID: string;
  /** The sandbox's host address, e.g. "10.11.0.7". */
  address: string;
  port: number;
  /**
   * In a fleet: the proxy of the sandbox's node, which alone reaches `address`. The request goes
   * there with the node token and the routing headers, and the node proxy forwards it.
   */
  node?: NodeRoute;
}

/** A node proxy: where it listens and the token it requires. */
export interface NodeRoute {
  /** The node proxy's base URL as the catalog holds it (the key of its connection pool). */
  url: string;
  host: string;
  port: number;
  token: string;
}

/** The header carrying the node token from a client proxy to a node proxy. */
export const NODE_TOKEN_HEADER = "x-moat-node-token";

/**
 * Set by a node proxy on its own 502s, so that the client proxy can tell "the node could not reach
 * the sandbox" (`unreachable`: it may have just paused or moved; `not-found`: not on that node now)
 * from the sandbox's own 502. Never relayed to clients.
 */
export const NODE_PROXY_ERROR_HEADER = "x-moat-node-proxy-error";

/** How one forwarded exchange ended, for logs and metrics. */
export interface ForwardOutcome {
  /** The status the client got: the sandbox's, or the proxy's own when forwarding failed. */
  status: number;
  /** The upstream error code (ECONNREFUSED, ECONNRESET, …) when the sandbox side failed. */
  upstreamError?: string;
  /** The client went away before the response ended. */
  clientAborted?: boolean;
  /**
   * With `handBack`: the sandbox could not be reached or dropped the connection before answering,
   * and nothing was sent to the client; this is the answer the proxy would have given.
   */
  unanswered?: ProxyError;
}

/** The status recorded when the client leaves before any response (nginx's convention). */
export const CLIENT_CLOSED_REQUEST = 499;

/** Headers that describe one connection, not the message (RFC 9110 §7.6.1), plus `expect`. */
const HOP_BY_HOP = new Set([
  "connection",
  "keep-alive",
  "proxy-connection",
  "proxy-authenticate",
  "proxy-authorization",
  "te",
  "trailer",
  "transfer-encoding",
  "upgrade",
  // The proxy's server has already answered `100 Continue`; the body streams as it comes.
  "expect",
]);

/** Headers the proxy consumes: routing and its own credential stay at the edge. */
const CONSUMED = new Set([
  SANDBOX_ID_HEADER,
  SANDBOX_PORT_HEADER,
  TRAFFIC_ACCESS_TOKEN_HEADER,
  NODE_TOKEN_HEADER,
]);

/**
 * Keep-alive connections to sandboxes, one pool per sandbox, so that a sandbox that stops, pauses or
 * moves takes its pooled connections with it: a TCP connection to a vanished sandbox does not fail,
 * it goes silent, and a request written to it would wait for an answer that never comes.
 */
export class UpstreamPool {
  readonly #pools = new Map<string, { address: string; agent: http.Agent }>();
  /**
   * One pool per node proxy, shared by all its sandboxes: the node proxy stays up while sandboxes
   * come and go, and it answers for a vanished sandbox itself.
   */
  readonly #nodes = new Map<string, http.Agent>();
  readonly #sweeper: NodeJS.Timeout;

  constructor() {
    this.#sweeper = setInterval(() => this.sweep(), 60_000);
    this.#sweeper.unref();
  }

  /** The pool for a sandbox at an address; a new address replaces (and closes) the old pool. */
  agentFor(sandboxID: string, address: string): http.Agent {
    const pool = this.#pools.get(sandboxID);
    if (pool?.address === address) return pool.agent;
    pool?.agent.destroy();
    const agent = createUpstreamAgent();
    this.#pools.set(sandboxID, { address, agent });
    return agent;
  }

  /** The keep-alive pool of a node proxy. */
  nodeAgent(node: NodeRoute): http.Agent {
    let agent = this.#nodes.get(node.url);
    if (!agent) {
      agent = createUpstreamAgent();
      this.#nodes.set(node.url, agent);
    }
    return agent;
  }

  /**
   * Closes a sandbox's connections, in flight ones included: it is gone, paused or moving, so they
   * lead nowhere.
   */
  forget(sandboxID: string): void {
    this.#pools.get(sandboxID)?.agent.destroy();
    this.#pools.delete(sandboxID);
  }

  /** Drops pools that hold no connection, so sandboxes that left without a word leave no trace. */
  sweep(): void {
    for (const [sandboxID, { agent }] of this.#pools) {
      const held = [...Object.values(agent.sockets), ...Object.values(agent.freeSockets)].some(
        (list) => (list?.length ?? 0) > 0,
      );
      if (!held) this.forget(sandboxID);
    }
  }

  get size(): number {
    return this.#pools.size;
  }

  close(): void {
    clearInterval(this.#sweeper);
    for (const sandboxID of [...this.#pools.keys()]) this.forget(sandboxID);
    for (const agent of this.#nodes.values()) agent.destroy();
    this.#nodes.clear();
  }
}

/**
 * One sandbox's keep-alive pool. The `timeout` matters beyond idleness: Node retires a free socket
 * one second before the server's `Keep-Alive: timeout=N` hint only when an agent timeout is set, and
 * without that a reused socket can meet the sandbox's own close (ECONNRESET). Active sockets are not
 * destroyed by this timeout, so long streams are unaffected.
 */
function createUpstreamAgent(): http.Agent {
  return new http.Agent({ keepAlive: true, keepAliveMsecs: 10_000, timeout: 60_000, scheduling: "lifo" });
}

function connectionTokens(headers: IncomingHttpHeaders): Set<string> {
  const value = headers.connection;
  return new Set((value ?? "").split(",").map((token) => token.trim().toLowerCase()));
}

function hostHeader(upstream: Upstream): string {
  const address = isIPv6(upstream.address) ? `[${upstream.address}]` : upstream.address;
  return `${address}:${upstream.port}`;
}

/**
 * The headers sent to the sandbox. Host becomes the sandbox's own address (apps that check Host,
 * like dev servers, accept an IP), and the client's view travels in X-Forwarded-*.
 */
export function upstreamRequestHeaders(req: IncomingMessage, upstream: Upstream): OutgoingHttpHeaders {
  const named = connectionTokens(req.headers);
  const out: OutgoingHttpHeaders = {};
  for (const [name, value] of Object.entries(req.headers)) {
    if (value === undefined || HOP_BY_HOP.has(name) || named.has(name) || CONSUMED.has(name)) continue;
    out[name] = value;
  }
  out.host = hostHeader(upstream);
  const client = req.socket.remoteAddress;
  if (client) {
    const prior = req.headers["x-forwarded-for"];
    out["x-forwarded-for"] = prior ? `${prior}, ${client}` : client;
  }
  if (req.headers.host && !req.headers["x-forwarded-host"]) out["x-forwarded-host"] = req.headers.host;
  if (!req.headers["x-forwarded-proto"]) out["x-forwarded-proto"] = "http";
  if (req.headers.upgrade) {
    out.connection = "Upgrade";
    out.upgrade = req.headers.upgrade;
  }
  if (upstream.node) {
    // Set from the routing decision: whatever the client sent under these names was dropped above.
    out[NODE_TOKEN_HEADER] = upstream.node.token;
    out[SANDBOX_ID_HEADER] = upstream.sandboxID;
    out[SANDBOX_PORT_HEADER] = String(upstream.port);
  }
  return out;
}

/** Where the request is sent: the node proxy in a fleet, else the sandbox itself. */
function target(upstream: Upstream): { host: string; port: number } {
  return upstream.node
    ? { host: upstream.node.host, port: upstream.node.port }
    : { host: upstream.address, port: upstream.port };
}

/** The sandbox's response headers, less the hop-by-hop ones. */
export function downstreamResponseHeaders(headers: IncomingHttpHeaders): OutgoingHttpHeaders {
  const named = connectionTokens(headers);
  const out: OutgoingHttpHeaders = {};
  for (const [name, value] of Object.entries(headers)) {
    if (value === undefined || HOP_BY_HOP.has(name) || named.has(name) || name === NODE_PROXY_ERROR_HEADER)
      continue;
    out[name] = value;
  }
  return out;
}

/**
 * The default for how long a connection to a sandbox may take to establish. A released address can
 * black-hole SYNs (no RST, no ICMP on some routes) and the kernel would wait minutes; a live sandbox
 * answers in milliseconds even when its app is slow, because gVisor's netstack completes the handshake.
 */
export const DEFAULT_CONNECT_TIMEOUT_MS = 10_000;

export interface ForwardOptions {
  /** Keep-alive pools for plain requests (tunnels use connections of their own). */
  pool: UpstreamPool;
  connectTimeoutMs: number;
  /**
   * Hand a failure to reach the sandbox (anything but a closed port) back as `unanswered`
   * instead of answering it, so that the caller may send the request again: only for requests
   * without a body whose method may be repeated.
   */
  handBack?: boolean;
}

/** Fails the request with ETIMEDOUT when its (new) socket does not connect in time. */
function limitConnectTime(request: http.ClientRequest, socket: Socket, ms: number): void {
  if (!socket.connecting) return;
  const timer = setTimeout(() => {
    const error: NodeJS.ErrnoException = new Error("connecting to the sandbox timed out");
    error.code = "ETIMEDOUT";
    request.destroy(error);
  }, ms);
  timer.unref();
  socket.once("connect", () => clearTimeout(timer));
  socket.once("close", () => clearTimeout(timer));
}

/** The proxy's own answer when the sandbox side fails before any response byte. */
function upstreamFailure(upstream: Upstream, error: NodeJS.ErrnoException): ProxyError {
  // Refused by the node proxy's address: the node is down, not the sandbox's port closed.
  if (upstream.node) return new UpstreamUnreachableError(upstream.sandboxID, upstream.port);
  if (error.code === "ECONNREFUSED") return new PortClosedError(upstream.sandboxID, upstream.port);
  return new UpstreamUnreachableError(upstream.sandboxID, upstream.port);
}

/** The request target as an origin-form path (absolute-form targets keep only path and query). */
function originForm(target: string | undefined): string {
  if (!target) return "/";
  if (target.startsWith("/")) return target;
  try {
    const url = new URL(target);
    return `${url.pathname}${url.search}`;
  } catch {
    return `/${target}`;
  }
}

/**
 * Forwards one HTTP exchange. Resolves when the client's response is closed (finished or not); never
 * rejects.
 */
export function forwardHTTP(
  req: IncomingMessage,
  res: http.ServerResponse,
  upstream: Upstream,
  options: ForwardOptions,
): Promise<ForwardOutcome> {
  return new Promise((resolve) => {
    const outcome: ForwardOutcome = { status: 0 };
    if (res.destroyed || req.socket.destroyed) {
      // The client left while the proxy looked the sandbox up.
      resolve({ status: CLIENT_CLOSED_REQUEST, clientAborted: true });
      return;
    }
    const upstreamReq = http.request({
      ...target(upstream),
      method: req.method,
      path: originForm(req.url),
      headers: upstreamRequestHeaders(req, upstream),
      agent: upstream.node
        ? options.pool.nodeAgent(upstream.node)
        : options.pool.agentFor(upstream.sandboxID, upstream.address),
    });
    upstreamReq.on("socket", (socket) => {
      socket.setNoDelay(true);
      limitConnectTime(upstreamReq, socket, options.connectTimeoutMs);
    });

    /** Ends the exchange without a clean end on either side, because the sandbox side failed. */
    let cut = false;
    let handedBack = false;
    const cutBoth = (code: string) => {
      outcome.upstreamError ??= code;
      cut = true;
      upstreamReq.destroy();
      res.destroy();
    };

    upstreamReq.on("response", (upstreamRes) => {
      outcome.status = upstreamRes.statusCode ?? 502;
      const nodeError = upstream.node ? upstreamRes.headers[NODE_PROXY_ERROR_HEADER] : undefined;
      if (options.handBack && (nodeError === "unreachable" || nodeError === "not-found")) {
        // The node could not reach the sandbox: the same as failing to reach it from here.
        upstreamRes.resume();
        handedBack = true;
        outcome.upstreamError = nodeError === "unreachable" ? "ENODEUNREACHABLE" : "ENODENOTFOUND";
        outcome.unanswered = new UpstreamUnreachableError(upstream.sandboxID, upstream.port);
        resolve(outcome);
        return;
      }
      try {
        res.writeHead(
          outcome.status,
          upstreamRes.statusMessage,
          downstreamResponseHeaders(upstreamRes.headers),
        );
        res.flushHeaders();
      } catch (error) {
        // Node refuses to send a reason phrase or header it considers invalid: the sandbox's answer
        // cannot be relayed faithfully, so it is not relayed at all.
        outcome.status = 502;
        cutBoth((error as NodeJS.ErrnoException).code ?? "ERR_INVALID_RESPONSE");
        return;
      }
      // A sandbox that resets mid-response fails upstreamRes (ECONNRESET, "aborted"); a client that
      // leaves fails res. Either way pipeline destroys the other stream; the close handler below
      // tells the two apart for the outcome.
      upstreamRes.on("error", (error: NodeJS.ErrnoException) => {
        if (!res.destroyed) cutBoth(error.code ?? "ERR_UPSTREAM");
      });
      pipeline(upstreamRes, res, () => undefined);
    });

    upstreamReq.on("error", (error: NodeJS.ErrnoException) => {
      if (cut || outcome.clientAborted) return;
      if (res.headersSent) {
        cutBoth(error.code ?? "ERR_UPSTREAM");
        return;
      }
      outcome.upstreamError = error.code ?? "ERR_UPSTREAM";
      const failure = upstreamFailure(upstream, error);
      if (options.handBack && failure instanceof UpstreamUnreachableError) {
        handedBack = true;
        outcome.unanswered = failure;
        resolve(outcome);
        return;
      }
      // Drain what the client still sends so its connection stays usable for the next request.
      req.unpipe(upstreamReq);
      req.resume();
      const rendered = renderError(failure, wantsHTML(req.headers.accept), requestIdOf(req));
      outcome.status = rendered.status;
      res.writeHead(rendered.status, rendered.headers).end(rendered.body);
    });

    res.on("close", () => {
      if (handedBack) return;
      if (!res.writableFinished && !cut) {
        outcome.clientAborted = true;
        if (outcome.status === 0) outcome.status = CLIENT_CLOSED_REQUEST;
        upstreamReq.destroy();
      }
      resolve(outcome);
    });

    // A request sent again has been read to its end already.
    if (req.readableEnded) upstreamReq.end();
    else req.pipe(upstreamReq);
  });
}

/**
 * Forwards an `Upgrade` request and, once the sandbox switches protocols, tunnels the two sockets.
 * A sandbox that declines the upgrade has its answer relayed and the connection closed. Resolves
 * when the client's socket is closed; never rejects.
 */
export function forwardUpgrade(
  req: IncomingMessage,
  socket: Socket,
  head: Buffer,
  upstream: Upstream,
  options: Pick<ForwardOptions, "connectTimeoutMs">,
): Promise<ForwardOutcome> {
  return new Promise((resolve) => {
    const outcome: ForwardOutcome = { status: 0 };
    let answered = false;
    const upstreamReq = http.request({
      ...target(upstream),
      method: req.method,
      path: originForm(req.url),
      headers: upstreamRequestHeaders(req, upstream),
      // A tunnel owns its connection for good: it never returns to a keep-alive pool.
      agent: false,
    });

    upstreamReq.on("socket", (upstreamSocket) =>
      limitConnectTime(upstreamReq, upstreamSocket, options.connectTimeoutMs),
    );
    socket.on("error", () => socket.destroy());
    socket.on("close", () => {
      if (!answered) {
        outcome.clientAborted = true;
        outcome.status = CLIENT_CLOSED_REQUEST;
      }
      upstreamReq.destroy();
      resolve(outcome);
    });

    upstreamReq.on("upgrade", (upstreamRes, upstreamSocket, upstreamHead) => {
      answered = true;
      outcome.status = upstreamRes.statusCode ?? 101;
      const lines = [`HTTP/1.1 ${outcome.status} ${upstreamRes.statusMessage ?? ""}`];
      const raw = upstreamRes.rawHeaders;
      for (let i = 0; i + 1 < raw.length; i += 2) lines.push(`${raw[i]}: ${raw[i + 1]}`);
      socket.write(`${lines.join("\r\n")}\r\n\r\n`);
      if (upstreamHead.length > 0) socket.write(upstreamHead);
      if (head.length > 0) upstreamSocket.write(head);
      socket.setNoDelay(true);
      upstreamSocket.setNoDelay(true);
      const teardown = () => {
        socket.destroy();
        upstreamSocket.destroy();
      };
      upstreamSocket.on("error", (error: NodeJS.ErrnoException) => {
        outcome.upstreamError ??= error.code ?? "ERR_UPSTREAM";
        teardown();
      });
      upstreamSocket.on("close", teardown);
      socket.pipe(upstreamSocket);
      upstreamSocket.pipe(socket);
    });

    upstreamReq.on("response", (upstreamRes) => {
      // The sandbox declined the upgrade: relay its answer, delimited by closing the connection.
      answered = true;
      outcome.status = upstreamRes.statusCode ?? 502;
      const headers = downstreamResponseHeaders(upstreamRes.headers);
      delete headers["content-length"];
      const lines = [`HTTP/1.1 ${outcome.status} ${upstreamRes.statusMessage ?? ""}`];
      for (const [name, value] of Object.entries(headers)) {
        for (const one of Array.isArray(value) ? value : [value]) lines.push(`${name}: ${one}`);
      }
      lines.push("connection: close");
      socket.write(`${lines.join("\r\n")}\r\n\r\n`);
      pipeline(upstreamRes, socket, () => socket.destroy());
    });

    upstreamReq.on("error", (error: NodeJS.ErrnoException) => {
      if (answered || socket.destroyed) return;
      answered = true;
      outcome.upstreamError = error.code ?? "ERR_UPSTREAM";
      const rendered = renderError(
        upstreamFailure(upstream, error),
        wantsHTML(req.headers.accept),
        requestIdOf(req),
      );
      outcome.status = rendered.status;
      socket.end(rawHTTPResponse(rendered, req.method));
    });

    upstreamReq.end();
  });
}
