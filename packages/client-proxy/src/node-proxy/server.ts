/**
 * The node proxy: in a fleet, the one door into a node's sandboxes from the rest of the fleet.
 * Sandbox addresses (10.11.x.y) exist only on their node, so client proxies elsewhere send each
 * request here instead: with the node token in `X-Moat-Node-Token` (anything else gets 401) and the
 * sandbox and port in `E2b-Sandbox-Id`/`E2b-Sandbox-Port`. The node's own registry (`lookup`) says
 * where the sandbox runs; the request is streamed there by forward.ts, as the client proxy does
 * (keep-alive pools per sandbox, upgrades tunnelled, the same JSON errors).
 *
 * The client proxy has already applied every per-request rule (traffic tokens, auto-resume, waiting
 * for transitions, connection caps); this proxy only authenticates its caller and routes. Its own
 * 502s carry `X-Moat-Node-Proxy-Error` so the client proxy can tell a sandbox that just left this
 * node from the sandbox's own 502.
 */
import { createHash, timingSafeEqual } from "node:crypto";
import http, { type IncomingMessage, type ServerResponse } from "node:http";
import type { AddressInfo, Socket } from "node:net";
import { createLogger, type Logger } from "@moat/shared";
import { headerValue } from "../access.js";
import {
  InternalProxyError,
  InvalidRouteError,
  NodeTokenError,
  ProxyError,
  ReservedPathError,
  rawHTTPResponse,
  renderError,
  SandboxNotFoundError,
  UpstreamUnreachableError,
  wantsHTML,
} from "../errors.js";
import {
  DEFAULT_CONNECT_TIMEOUT_MS,
  type ForwardOptions,
  forwardHTTP,
  forwardUpgrade,
  NODE_PROXY_ERROR_HEADER,
  NODE_TOKEN_HEADER,
  type Upstream,
  UpstreamPool,
} from "../forward.js";
import {
  isReservedEnvdPath,
  normalisePath,
  SANDBOX_ID_HEADER,
  SANDBOX_PORT_HEADER,
  validPort,
  validSandboxID,
} from "../routing.js";

export interface NodeProxyOptions {
  /** Address to listen on: where the fleet's client proxies reach this node. */
  host: string;
  /** Port to listen on (5007 by default in the CLI); 0 picks a free one. */
  port: number;
  /** The node token (MOAT_NODE_TOKEN, or the node's generated one) every request must carry. */
  token: string;
  /** The host address of a sandbox running on this node; undefined when it does not run here. */
  lookup(sandboxID: string): string | undefined | Promise<string | undefined>;
  logger?: Logger;
  /** How long connecting to a sandbox's port may take before the proxy answers 502. Default 10 s. */
  connectTimeoutMs?: number;
}

export interface NodeProxy {
  readonly port: number;
  /** Stops listening and cuts every open request and tunnel. Idempotent. */
  close(): Promise<void>;
}

function digest(value: string): Buffer {
  return createHash("sha256").update(value).digest();
}

/** Why the node proxy answered on its own, for the client proxy (`X-Moat-Node-Proxy-Error`). */
function nodeErrorKind(error: ProxyError): string | undefined {
  if (error instanceof SandboxNotFoundError) return "not-found";
  if (error instanceof UpstreamUnreachableError) return "unreachable";
  return undefined;
}

export async function startNodeProxy(options: NodeProxyOptions): Promise<NodeProxy> {
  if (options.token.length < 32) throw new Error("the node proxy's token must be at least 32 characters");
  const log = options.logger ?? createLogger("node-proxy");
  const expected = digest(options.token);
  const pool = new UpstreamPool();
  const forwarding: ForwardOptions = {
    pool,
    connectTimeoutMs: options.connectTimeoutMs ?? DEFAULT_CONNECT_TIMEOUT_MS,
    // Failures to reach the sandbox are answered below, marked for the client proxy.
    handBack: true,
  };
  const tunnels = new Set<Socket>();

  /** The sandbox the request is for, once its caller is authenticated. */
  async function upstreamOf(req: IncomingMessage): Promise<Upstream> {
    const presented = headerValue(req.headers[NODE_TOKEN_HEADER]);
    if (presented === undefined || !timingSafeEqual(digest(presented), expected)) {
      throw new NodeTokenError(presented !== undefined);
    }
    const idHeader = headerValue(req.headers[SANDBOX_ID_HEADER]);
    const portHeader = headerValue(req.headers[SANDBOX_PORT_HEADER]);
    if (!idHeader || !portHeader) {
      throw new InvalidRouteError(
        "A node proxy request names its sandbox in E2b-Sandbox-Id and E2b-Sandbox-Port",
      );
    }
    const sandboxID = validSandboxID(idHeader.trim());
    const port = validPort(portHeader.trim());
    // Defence in depth: the client proxy refuses these too, and the node talks to envd directly.
    if (isReservedEnvdPath(port, req.url ?? "/")) throw new ReservedPathError(normalisePath(req.url ?? "/"));
    let address: string | undefined;
    try {
      address = await options.lookup(sandboxID);
    } catch (error) {
      throw new InternalProxyError(error);
    }
    if (!address) {
      pool.forget(sandboxID);
      throw new SandboxNotFoundError(sandboxID);
    }
    return { sandboxID, address, port };
  }

  function render(error: unknown, accept: string | undefined) {
    const proxyError = error instanceof ProxyError ? error : new InternalProxyError(error);
    if (proxyError instanceof InternalProxyError) log.error({ err: proxyError.cause }, proxyError.message);
    const rendered = renderError(proxyError, wantsHTML(accept));
    const kind = nodeErrorKind(proxyError);
    if (kind) rendered.headers[NODE_PROXY_ERROR_HEADER] = kind;
    return rendered;
  }

  async function handleRequest(req: IncomingMessage, res: ServerResponse): Promise<void> {
    try {
      const upstream = await upstreamOf(req);
      const outcome = await forwardHTTP(req, res, upstream, forwarding);
      if (outcome.unanswered) {
        // Drain what the client still sends so its pooled connection stays usable.
        req.unpipe();
        req.resume();
        throw outcome.unanswered;
      }
      if (outcome.upstreamError && outcome.upstreamError !== "ECONNREFUSED") {
        log.warn(
          { sandboxID: upstream.sandboxID, port: upstream.port, error: outcome.upstreamError },
          "upstream failed",
        );
      }
    } catch (error) {
      if (res.headersSent || res.destroyed) {
        res.destroy();
        return;
      }
      const rendered = render(error, req.headers.accept);
      res.writeHead(rendered.status, rendered.headers).end(rendered.body);
    }
  }

  async function handleUpgrade(req: IncomingMessage, socket: Socket, head: Buffer): Promise<void> {
    tunnels.add(socket);
    socket.on("close", () => tunnels.delete(socket));
    socket.on("error", () => socket.destroy());
    try {
      const upstream = await upstreamOf(req);
      if (socket.destroyed) return;
      await forwardUpgrade(req, socket, head, upstream, forwarding);
    } catch (error) {
      if (!socket.destroyed) socket.end(rawHTTPResponse(render(error, req.headers.accept), req.method));
    }
  }

  const server = http.createServer({ noDelay: true, requestTimeout: 0, requireHostHeader: false });
  const escaped = (error: unknown) => log.error({ err: error }, "unhandled error in the node proxy");
  server.on("request", (req, res) => {
    handleRequest(req, res).catch((error) => {
      escaped(error);
      res.destroy();
    });
  });
  server.on("upgrade", (req: IncomingMessage, socket: Socket, head: Buffer) => {
    handleUpgrade(req, socket, head).catch((error) => {
      escaped(error);
      socket.destroy();
    });
  });
  server.on("clientError", (_error, socket: Socket) => socket.destroy());

  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(options.port, options.host, () => {
      server.off("error", reject);
      resolve();
    });
  });
  server.on("error", (error) => log.error({ err: error }, "node proxy server error"));
  const { port } = server.address() as AddressInfo;
  log.info({ host: options.host, port }, "node proxy listening");

  let closing: Promise<void> | undefined;
  return {
    port,
    close() {
      closing ??= new Promise<void>((resolve) => {
        server.close(() => resolve());
        for (const socket of tunnels) socket.destroy();
        server.closeAllConnections();
        pool.close();
      });
      return closing;
    },
  };
}
