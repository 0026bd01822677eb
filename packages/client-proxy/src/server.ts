/**
 * The client proxy's HTTP server: the edge every SDK call and every browser visit to a sandbox port
 * goes through (design.md, "Walk of a create"; e2b-protocol.md §6.4).
 *
 * One request, HTTP or Upgrade, goes:
 *   route (routing.ts: host or headers → sandboxID, port; signed-urls.ts: a signed `/files` URL on
 *     the shared address → the sandbox whose token signed it, envd's port)
 *   → catalog lookup (unknown or stopped → 502, stopping → 409, pausing/starting → wait for the
 *     outcome, paused → auto-resume or 502)
 *   → guards (envd's internal paths → 404, traffic token → 403, per-sandbox connection cap → 429)
 *   → forward (forward.ts: stream both ways, or tunnel an upgrade).
 * Every refusal is a typed ProxyError rendered here, as JSON or, for browsers, HTML.
 */
import { createHash, timingSafeEqual } from "node:crypto";
import { readFileSync } from "node:fs";
import http, { type IncomingMessage, type ServerResponse } from "node:http";
import type { AddressInfo, Socket } from "node:net";
import { performance } from "node:perf_hooks";
import { setTimeout as sleep } from "node:timers/promises";
import {
  type CatalogEntry,
  clientErrorAnswer,
  createLogger,
  ENVD_PORT,
  type Logger,
  type SandboxCatalog,
} from "@moat/shared";
import { checkResumeAllowed, checkTrafficToken, headerValue } from "./access.js";
import { RedisCatalog } from "./catalog/redis-catalog.js";
import { limitClientConnections } from "./client-connections.js";
import {
  InternalProxyError,
  InvalidRouteError,
  MalformedRequestError,
  MetricsUnauthorizedError,
  ProxyError,
  ReservedPathError,
  rawHTTPResponse,
  renderError,
  requestIdOf,
  SandboxNotFoundError,
  SandboxTransitioningError,
  TooManyConnectionsError,
  TRAFFIC_ACCESS_TOKEN_HEADER,
  wantsHTML,
} from "./errors.js";
import {
  DEFAULT_CONNECT_TIMEOUT_MS,
  type ForwardOptions,
  type ForwardOutcome,
  forwardHTTP,
  forwardUpgrade,
  type NodeRoute,
  type Upstream,
  UpstreamPool,
} from "./forward.js";
import { ProxyMetrics, type ProxyMetricsSnapshot } from "./metrics.js";
import {
  dashboardRedirect,
  isReservedEnvdPath,
  normalisePath,
  type Route,
  resolveRoute,
  SANDBOX_ID_HEADER,
  SANDBOX_PORT_HEADER,
} from "./routing.js";
import { filesQuery, findSignedSandbox } from "./signed-urls.js";

export interface ClientProxyOptions {
  /** Port to listen on; 0 picks a free one (the chosen port is in the result). */
  port: number;
  /** Address to listen on. Default 127.0.0.1; "0.0.0.0" to serve other machines. */
  host?: string;
  /**
   * The sandbox domain, e.g. "moat.local": hosts `<port>-<sandboxID>.<domain>` name a sandbox, and
   * `sandbox.<domain>` is a shared host on which the routing headers are honoured.
   */
  domain: string;
  /**
   * Where sandboxes are and whether they run; the API owns it, the proxy only reads it. Required
   * unless `redisURL` is set (then the proxy reads the catalog the API writes to Redis).
   */
  catalog?: SandboxCatalog;
  /**
   * A fleet's routing catalog in Redis (`redis://…`), kept by the API processes: entries are
   * cached here and dropped on the API's change messages. Ignored when `catalog` is given.
   */
  redisURL?: string;
  /**
   * The API's base URL, for auto-resume when the catalog is read from Redis
   * (`POST /internal/sandboxes/{id}/resume` with the node token). Unset: paused sandboxes are
   * not resumed by traffic (502).
   */
  apiURL?: string;
  /**
   * The deployment's node token (MOAT_NODE_TOKEN): sent to node proxies, for sandboxes whose entry
   * names one (`nodeProxyURL`), and to the API's resume route. Without it such sandboxes get 500.
   */
  nodeToken?: string;
  /** Default: createLogger("client-proxy"). */
  logger?: Logger;
  /**
   * Requests and tunnels one sandbox may have in flight through this proxy at once; beyond it the
   * proxy answers 429. Default 1000, or a quarter of `maxConnections` when that is smaller; 0
   * means no limit.
   */
  maxConnectionsPerSandbox?: number;
  /**
   * Client connections the proxy holds at once, over all sandboxes; beyond it new ones are closed
   * as they arrive (and idle keep-alive ones are shed). Each proxied connection holds two file
   * descriptors (client and sandbox side) of a process it may share with the API and the
   * orchestrator (`moat up`), so a flood must stop well short of the open-file limit. Default: a
   * quarter of that limit; 0 means no limit.
   */
  maxConnections?: number;
  /**
   * Client connections one client address holds at once; beyond it that address's new ones are
   * closed as they arrive (after its silent and idle ones are shed), while other clients get in.
   * Default: half of `maxConnections`, so that no one client can fill the proxy. 0 means no limit:
   * set it behind a load balancer, where every client has the balancer's address.
   */
  maxConnectionsPerClient?: number;
  /** How long connecting to a sandbox's port may take before the proxy answers 502. Default 10 s. */
  connectTimeoutMs?: number;
  /**
   * How long a request for a sandbox being paused, created or resumed waits for the outcome
   * (then it is forwarded, resumes the sandbox, or gets the paused sandbox's 502) before the
   * proxy answers 409. Default 30 s.
   */
  transitionWaitMs?: number;
  /**
   * Bearer token that reads GET /metrics (the operator's Prometheus). Unset: /metrics answers 401
   * to everyone, since traffic counts of every tenant are nobody else's business.
   */
  metricsToken?: string;
  /**
   * The dashboard's URL (the API's `/dashboard`). GET `/dashboard…` on the bare domain's Host (the
   * link `e2b sandbox create` prints: `https://<domain>/dashboard/inspect/sandbox/<id>`) is
   * redirected there. Unset: such requests get the usual "names no sandbox" error.
   */
  dashboardURL?: string;
}

export interface ClientProxy {
  /** The port the proxy listens on. */
  readonly port: number;
  metrics(): ProxyMetricsSnapshot;
  /** Stops listening and cuts every open request and tunnel. Idempotent. */
  close(): Promise<void>;
}

const DEFAULT_MAX_CONNECTIONS_PER_SANDBOX = 1000;
const DEFAULT_TRANSITION_WAIT_MS = 30_000;
/** How often a request waiting for a transition looks at the catalog again. */
const TRANSITION_POLL_MS = 50;
/** How long a request the sandbox dropped unanswered waits to learn that it paused or moved. */
const MOVE_WAIT_MS = 2_000;

/** The process's open-file limit, or undefined when it is unlimited or cannot be read. */
function openFileLimit(): number | undefined {
  try {
    const line = readFileSync("/proc/self/limits", "utf8")
      .split("\n")
      .find((l) => l.startsWith("Max open files"));
    const soft = Number(line?.slice("Max open files".length).trim().split(/\s+/)[0]);
    return Number.isInteger(soft) && soft > 0 ? soft : undefined;
  } catch {
    return undefined;
  }
}

/** A quarter of the open-file limit: half of it for proxied connections, two descriptors each. */
export function defaultMaxConnections(limit = openFileLimit()): number {
  return limit === undefined ? 0 : Math.max(64, Math.floor(limit / 4));
}

/** A request admitted to a sandbox; `release` returns its connection slot (idempotent). */
interface Admitted {
  upstream: Upstream;
  release(): void;
}

export async function startClientProxy(options: ClientProxyOptions): Promise<ClientProxy> {
  const { domain } = options;
  const log = options.logger ?? createLogger("client-proxy");
  let catalog: SandboxCatalog;
  let ownCatalog: RedisCatalog | undefined;
  if (options.catalog) catalog = options.catalog;
  else if (options.redisURL) {
    if (options.apiURL && !options.nodeToken) {
      throw new Error(
        "auto-resume through the API (apiURL) needs the node token: set nodeToken (MOAT_NODE_TOKEN)",
      );
    }
    ownCatalog = await RedisCatalog.open({
      redisURL: options.redisURL,
      ...(options.apiURL ? { apiURL: options.apiURL } : {}),
      ...(options.nodeToken ? { nodeToken: options.nodeToken } : {}),
      logger: log,
    });
    catalog = ownCatalog;
  } else throw new Error("the client proxy needs a catalog, or a redisURL to read one from");
  const nodeRoutes = new NodeRoutes(options.nodeToken);
  const maxTotal = options.maxConnections ?? defaultMaxConnections();
  const maxConnections =
    options.maxConnectionsPerSandbox ??
    (maxTotal > 0
      ? Math.min(DEFAULT_MAX_CONNECTIONS_PER_SANDBOX, Math.max(1, Math.floor(maxTotal / 4)))
      : DEFAULT_MAX_CONNECTIONS_PER_SANDBOX);
  const maxPerClient =
    options.maxConnectionsPerClient ?? (maxTotal > 0 ? Math.max(1, Math.floor(maxTotal / 2)) : 0);
  const metrics = new ProxyMetrics();
  const pool = new UpstreamPool();
  const transitionWaitMs = options.transitionWaitMs ?? DEFAULT_TRANSITION_WAIT_MS;
  const forwarding: ForwardOptions = {
    pool,
    connectTimeoutMs: options.connectTimeoutMs ?? DEFAULT_CONNECT_TIMEOUT_MS,
  };
  /** In-flight requests and tunnels per sandbox, for the connection cap. */
  const active = new Map<string, number>();
  /** One resume per paused sandbox at a time; concurrent requests wait on the same one. */
  const resuming = new Map<string, Promise<CatalogEntry | undefined>>();
  /** Sockets taken over by an upgrade: the HTTP server no longer closes them itself. */
  const tunnels = new Set<Socket>();

  function routeOf(req: IncomingMessage): Route {
    return resolveRoute(
      {
        host: req.headers.host,
        sandboxIDHeader: headerValue(req.headers[SANDBOX_ID_HEADER]),
        portHeader: headerValue(req.headers[SANDBOX_PORT_HEADER]),
      },
      domain,
    );
  }

  async function lookup(sandboxID: string): Promise<CatalogEntry | undefined> {
    try {
      return await catalog.lookup(sandboxID);
    } catch (error) {
      if (error instanceof ProxyError) throw error;
      throw new InternalProxyError(error);
    }
  }

  async function resume(
    entry: CatalogEntry,
    port: number,
    req: IncomingMessage,
    signed: boolean,
  ): Promise<CatalogEntry> {
    const { sandboxID } = entry;
    if (!entry.autoResume || !catalog.resume) throw new SandboxNotFoundError(sandboxID);
    // A valid signed URL was made with the sandbox's access token: it stands for the token here.
    const denied = signed
      ? undefined
      : checkResumeAllowed(entry, port, {
          accessToken: headerValue(req.headers["x-access-token"]),
          trafficToken: headerValue(req.headers[TRAFFIC_ACCESS_TOKEN_HEADER]),
        });
    if (denied) throw denied;
    let pending = resuming.get(sandboxID);
    if (!pending) {
      log.info({ sandboxID }, "auto-resuming a paused sandbox");
      pending = catalog.resume(sandboxID).finally(() => resuming.delete(sandboxID));
      resuming.set(sandboxID, pending);
    }
    let resumed: CatalogEntry | undefined;
    try {
      resumed = await pending;
    } catch (error) {
      log.warn({ sandboxID, err: error }, "auto-resume failed");
      throw new SandboxNotFoundError(sandboxID);
    }
    if (!resumed) throw new SandboxNotFoundError(sandboxID);
    return resumed;
  }

  /**
   * The sandbox's entry once it is no longer being paused, created or resumed: a pause closes the
   * sandbox to new connections (one sent there would wait for the connect timeout), so requests
   * wait here for the outcome instead. Stops early when the client leaves.
   */
  async function afterTransition(
    entry: CatalogEntry,
    req: IncomingMessage,
  ): Promise<CatalogEntry | undefined> {
    const deadline = performance.now() + transitionWaitMs;
    let current: CatalogEntry | undefined = entry;
    while (
      (current?.state === "pausing" || current?.state === "starting") &&
      performance.now() < deadline &&
      !req.socket.destroyed
    ) {
      await sleep(TRANSITION_POLL_MS);
      current = await lookup(entry.sandboxID);
    }
    return current;
  }

  /**
   * Whether the sandbox left `address` (paused, pausing, moved or gone) within a moment: the
   * node's word of a pause can reach the catalog just after a request met the closed sandbox.
   */
  async function movedOn(sandboxID: string, address: string, req: IncomingMessage): Promise<boolean> {
    const deadline = performance.now() + MOVE_WAIT_MS;
    for (;;) {
      const entry = await lookup(sandboxID);
      if (entry?.state !== "running" || entry.hostAddress !== address) return true;
      if (performance.now() >= deadline || req.socket.destroyed) return false;
      await sleep(TRANSITION_POLL_MS);
    }
  }

  /**
   * Looks the sandbox up and applies every guard; the result holds a connection slot. `signed`:
   * routed by a signed `/files` URL the proxy has verified.
   */
  async function admit(
    req: IncomingMessage,
    sandboxID: string,
    port: number,
    signed = false,
  ): Promise<Admitted> {
    let entry = await lookup(sandboxID);
    if (entry?.state !== "running") pool.forget(sandboxID);
    if (!entry) throw new SandboxNotFoundError(sandboxID);
    if (isReservedEnvdPath(port, req.url ?? "/")) throw new ReservedPathError(normalisePath(req.url ?? "/"));
    const tokenError = checkTrafficToken(entry, port, headerValue(req.headers[TRAFFIC_ACCESS_TOKEN_HEADER]));
    if (tokenError) throw tokenError;
    if (entry.state === "pausing" || entry.state === "starting") {
      entry = await afterTransition(entry, req);
      if (entry?.state !== "running") pool.forget(sandboxID);
      if (!entry) throw new SandboxNotFoundError(sandboxID);
    }
    if (entry.state === "paused") entry = await resume(entry, port, req, signed);
    if (entry.state !== "running") throw new SandboxTransitioningError(sandboxID);

    const count = active.get(sandboxID) ?? 0;
    if (maxConnections > 0 && count >= maxConnections) {
      throw new TooManyConnectionsError(sandboxID, maxConnections);
    }
    active.set(sandboxID, count + 1);
    metrics.active++;
    let released = false;
    const node = entry.nodeProxyURL ? nodeRoutes.of(entry.nodeProxyURL) : undefined;
    return {
      upstream: node
        ? { sandboxID, address: entry.hostAddress, port, node }
        : { sandboxID, address: entry.hostAddress, port },
      release() {
        if (released) return;
        released = true;
        metrics.active--;
        const left = (active.get(sandboxID) ?? 1) - 1;
        if (left > 0) active.set(sandboxID, left);
        else active.delete(sandboxID);
      },
    };
  }

  function asProxyError(error: unknown): ProxyError {
    if (error instanceof ProxyError) return error;
    return new InternalProxyError(error);
  }

  function logRefusal(req: IncomingMessage, route: Route | undefined, error: ProxyError): void {
    const fields = {
      ...(route?.kind === "sandbox" ? { sandboxID: route.sandboxID, port: route.port } : {}),
      method: req.method,
      path: pathOf(req.url),
      status: error.status,
      requestId: requestIdOf(req),
    };
    if (error instanceof InternalProxyError) log.error({ ...fields, err: error.cause }, error.message);
    else log.debug({ ...fields, reason: error.message }, "refused");
  }

  function logForwarded(req: IncomingMessage, upstream: Upstream, outcome: ForwardOutcome, started: number) {
    const fields = {
      sandboxID: upstream.sandboxID,
      port: upstream.port,
      method: req.method,
      path: pathOf(req.url),
      status: outcome.status,
      ms: Math.round((performance.now() - started) * 10) / 10,
      ...(outcome.upstreamError ? { upstreamError: outcome.upstreamError } : {}),
      ...(outcome.clientAborted ? { clientAborted: true } : {}),
    };
    if (outcome.upstreamError) metrics.recordUpstreamError(outcome.upstreamError);
    if (outcome.clientAborted) metrics.recordClientAbort();
    // A closed port is routine (an app still starting); a sandbox failing mid-exchange is not.
    if (outcome.upstreamError && outcome.upstreamError !== "ECONNREFUSED") {
      log.warn(fields, "upstream failed");
    } else {
      log.debug(fields, "forwarded");
    }
  }

  async function serveSelf(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const path = pathOf(req.url);
    let body: Buffer;
    let contentType = "application/json; charset=utf-8";
    if ((req.method === "GET" || req.method === "HEAD") && path === "/health") {
      body = Buffer.from(JSON.stringify({ status: "ok" }));
    } else if (req.method === "GET" && path === "/metrics") {
      checkMetricsToken(req, options.metricsToken);
      body = Buffer.from(await metrics.text());
      contentType = metrics.registry.contentType;
    } else {
      throw new InvalidRouteError(
        `This request names no sandbox: send E2b-Sandbox-Id and E2b-Sandbox-Port, or use a <port>-<sandboxID>.${domain} host`,
      );
    }
    metrics.recordStatus(200);
    res.writeHead(200, { "content-type": contentType, "content-length": body.length });
    res.end(req.method === "HEAD" ? undefined : body);
  }

  async function handleRequest(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const started = performance.now();
    let route: Route | undefined;
    let admitted: Admitted | undefined;
    try {
      const dashboard = dashboardRedirect(
        { host: req.headers.host, method: req.method, target: req.url },
        domain,
        options.dashboardURL,
      );
      if (dashboard) {
        metrics.recordStatus(302);
        res.writeHead(302, { location: dashboard, "content-length": 0, "cache-control": "no-store" }).end();
        return;
      }
      route = routeOf(req);
      if (route.kind === "proxy") {
        const signedQuery = filesQuery(req.method, req.url);
        if (!signedQuery) {
          await serveSelf(req, res);
          return;
        }
        const { sandboxID } = await findSignedSandbox(catalog, req.method ?? "", signedQuery);
        route = { kind: "sandbox", sandboxID, port: ENVD_PORT, via: "signature" };
      }
      const signed = route.via === "signature";
      admitted = await admit(req, route.sandboxID, route.port, signed);
      let outcome = await forwardHTTP(req, res, admitted.upstream, {
        ...forwarding,
        handBack: mayResend(req),
      });
      if (outcome.unanswered) {
        // Reset or unreachable before any answer: if the sandbox has begun a pause (or moved) in
        // the meantime, the request goes where it is now, as it would have a moment later.
        const { address } = admitted.upstream;
        if (outcome.upstreamError) metrics.recordUpstreamError(outcome.upstreamError);
        admitted.release();
        admitted = undefined;
        if (!(await movedOn(route.sandboxID, address, req))) {
          // Still there, at the same address. A reset (a sandbox just restored can drop a first
          // connection) sends the request, bodyless so it can go again, once more on a fresh
          // connection; an address that does not answer at all is not waited on twice.
          if (outcome.upstreamError !== "ECONNRESET") throw outcome.unanswered;
          pool.forget(route.sandboxID);
        }
        admitted = await admit(req, route.sandboxID, route.port, signed);
        outcome = await forwardHTTP(req, res, admitted.upstream, forwarding);
      }
      metrics.recordStatus(outcome.status);
      logForwarded(req, admitted.upstream, outcome, started);
    } catch (error) {
      const proxyError = asProxyError(error);
      logRefusal(req, route, proxyError);
      metrics.recordStatus(proxyError.status);
      if (res.headersSent || res.destroyed) {
        res.destroy();
        return;
      }
      const rendered = renderError(proxyError, wantsHTML(req.headers.accept), requestIdOf(req));
      // A client over its sandbox's cap keeps no idle connection here to come back on.
      if (proxyError instanceof TooManyConnectionsError) res.shouldKeepAlive = false;
      res.writeHead(rendered.status, rendered.headers).end(rendered.body);
    } finally {
      admitted?.release();
    }
  }

  async function handleUpgrade(req: IncomingMessage, socket: Socket, head: Buffer): Promise<void> {
    const started = performance.now();
    tunnels.add(socket);
    socket.on("close", () => tunnels.delete(socket));
    socket.on("error", () => socket.destroy());
    let route: Route | undefined;
    let admitted: Admitted | undefined;
    try {
      route = routeOf(req);
      if (route.kind === "proxy") {
        throw new InvalidRouteError(
          "This upgrade request names no sandbox: send E2b-Sandbox-Id and E2b-Sandbox-Port",
        );
      }
      // Its body would never reach a sandbox server that answers it as a plain request (Node's,
      // without an upgrade handler, waits for it): the exchange would hang.
      if (req.headers["transfer-encoding"] !== undefined || (req.headers["content-length"] ?? "0") !== "0") {
        throw new MalformedRequestError(
          400,
          "An Upgrade request cannot carry a body: send the body without Upgrade, or after the protocol switch",
        );
      }
      admitted = await admit(req, route.sandboxID, route.port);
      if (socket.destroyed) return;
      const outcome = await forwardUpgrade(req, socket, head, admitted.upstream, forwarding);
      metrics.recordStatus(outcome.status);
      if (outcome.status === 101) metrics.recordTunnel();
      logForwarded(req, admitted.upstream, outcome, started);
    } catch (error) {
      const proxyError = asProxyError(error);
      logRefusal(req, route, proxyError);
      metrics.recordStatus(proxyError.status);
      if (!socket.destroyed) {
        socket.end(
          rawHTTPResponse(
            renderError(proxyError, wantsHTML(req.headers.accept), requestIdOf(req)),
            req.method,
          ),
        );
      }
    } finally {
      admitted?.release();
    }
  }

  const server = http.createServer({
    noDelay: true,
    // Uploads and streams may legitimately take longer than Node's default of 300 s to arrive;
    // headersTimeout still bounds clients that never finish their headers.
    requestTimeout: 0,
    // A request without a Host is the router's to refuse (with a JSON error), not Node's bare 400.
    requireHostHeader: false,
  });
  limitClientConnections(server, {
    maxTotal,
    maxPerClient,
    onDrop: () => metrics.recordDroppedConnection(),
    onShed: (shed, cap) =>
      log.warn(
        cap === "total"
          ? { maxConnections: maxTotal, shed }
          : { maxConnectionsPerClient: maxPerClient, shed },
        cap === "total"
          ? "client connection cap reached; shedding connections that ask for nothing"
          : "a client reached its connection cap; shedding its connections that ask for nothing",
      ),
  });
  // The handlers answer every failure themselves; anything that still escapes is a bug, logged
  // here rather than left to crash the process that hosts the proxy.
  const escaped = (error: unknown) => log.error({ err: error }, "unhandled error in the client proxy");
  server.on("request", (req, res) => {
    handleRequest(req, res).catch((error) => {
      escaped(error);
      res.destroy();
    });
  });
  /** Answers on a socket Node's HTTP machinery gave up or never took, as JSON, then closes it. */
  const refuseRaw = (socket: Socket, refusal: MalformedRequestError, method: string | undefined) => {
    metrics.recordStatus(refusal.status);
    log.debug({ status: refusal.status, reason: refusal.message }, "refused");
    socket.end(rawHTTPResponse(renderError(refusal, false, requestIdOf(undefined)), method));
    socket.destroySoon();
  };
  // What Node's parser rejects is answered as JSON too (Node's own answer has no body), unless
  // an answer on that connection has already begun.
  server.on("clientError", (error: NodeJS.ErrnoException & { rawPacket?: Buffer }, socket: Socket) => {
    const answer = clientErrorAnswer(error, socket);
    if (!answer) {
      socket.destroy();
      return;
    }
    refuseRaw(
      socket,
      new MalformedRequestError(answer.status, answer.message),
      answer.head ? "HEAD" : undefined,
    );
  });
  // Without a listener Node drops a CONNECT without a word.
  server.on("connect", (_req: IncomingMessage, socket: Socket) => {
    socket.on("error", () => socket.destroy());
    refuseRaw(
      socket,
      new MalformedRequestError(405, "CONNECT is not supported: send the request itself to the proxy"),
      "CONNECT",
    );
  });
  server.on("upgrade", (req: IncomingMessage, socket: Socket, head: Buffer) => {
    handleUpgrade(req, socket, head).catch((error) => {
      escaped(error);
      socket.destroy();
    });
  });

  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(options.port, options.host ?? "127.0.0.1", () => {
      server.off("error", reject);
      resolve();
    });
  });
  server.on("error", (error) => log.error({ err: error }, "client proxy server error"));
  const { port } = server.address() as AddressInfo;
  log.info({ host: options.host ?? "127.0.0.1", port, domain }, "client proxy listening");

  let closing: Promise<void> | undefined;
  return {
    port,
    metrics: () => metrics.snapshot(),
    close() {
      closing ??= new Promise<void>((resolve) => {
        server.close(() => resolve());
        for (const socket of tunnels) socket.destroy();
        server.closeAllConnections();
        pool.close();
      }).then(() => ownCatalog?.close());
      return closing;
    },
  };
}

/** The node proxies the catalog names, parsed once each. */
class NodeRoutes {
  readonly #routes = new Map<string, NodeRoute>();

  constructor(private readonly token: string | undefined) {}

  of(url: string): NodeRoute {
    let route = this.#routes.get(url);
    if (route) return route;
    if (!this.token) {
      throw new InternalProxyError(
        new Error(
          `the sandbox's node has a proxy (${url}) but this proxy has no node token: set MOAT_NODE_TOKEN`,
        ),
      );
    }
    let parsed: URL;
    try {
      parsed = new URL(url);
    } catch (error) {
      throw new InternalProxyError(error);
    }
    if (parsed.protocol !== "http:") {
      throw new InternalProxyError(new Error(`a node proxy URL must be http://host:port, not ${url}`));
    }
    route = {
      url,
      host: parsed.hostname.replace(/^\[|\]$/g, ""),
      port: Number(parsed.port || 80),
      token: this.token,
    };
    if (this.#routes.size > 10_000) this.#routes.clear();
    this.#routes.set(url, route);
    return route;
  }
}

/** Whether the request can be sent to the sandbox again: a method that may repeat, no body. */
function mayResend(req: IncomingMessage): boolean {
  const { method, headers } = req;
  if (method !== "GET" && method !== "HEAD" && method !== "OPTIONS") return false;
  return headers["transfer-encoding"] === undefined && (headers["content-length"] ?? "0") === "0";
}

/** The path of a request target without its query: queries can carry file-URL signatures. */
function pathOf(target: string | undefined): string {
  const path = target ?? "/";
  const cut = path.indexOf("?");
  return cut === -1 ? path : path.slice(0, cut);
}

/** 401 unless the request carries `Authorization: Bearer <token>` with the metrics token. */
function checkMetricsToken(req: IncomingMessage, token: string | undefined): void {
  if (!token) {
    throw new MetricsUnauthorizedError(
      "/metrics is off: start the proxy with a metrics token (moat up: MOAT_METRICS_TOKEN or the admin token)",
    );
  }
  const given = /^Bearer\s+(\S+)\s*$/i.exec(headerValue(req.headers.authorization) ?? "")?.[1] ?? "";
  const digest = (text: string) => createHash("sha256").update(text).digest();
  if (!timingSafeEqual(digest(given), digest(token))) {
    throw new MetricsUnauthorizedError("/metrics needs Authorization: Bearer <metrics token>");
  }
}
