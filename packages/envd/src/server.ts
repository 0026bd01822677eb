import { execFile } from "node:child_process";
import http from "node:http";
import type { AddressInfo, Socket } from "node:net";
import {
  Code,
  ConnectError,
  createContextKey,
  createContextValues,
  type Interceptor,
} from "@connectrpc/connect";
import { connectNodeAdapter } from "@connectrpc/connect-node";
import { getRequestListener } from "@hono/node-server";
import { createNoopLogger, type Logger, logContext, traceIdOf } from "@moat/shared";
import { Filesystem } from "@moat/shared/gen/envd/filesystem";
import { Process } from "@moat/shared/gen/envd/process";
import { presentsToken, tokenMatches } from "./auth/access-token.js";
import { UserDirectory } from "./auth/users.js";
import type { EnvdContext } from "./context.js";
import { forgetInodeNumbers } from "./fs/metadata.js";
import { createHTTPApp } from "./http/app.js";
import { malformedBinaryInterceptor, withMalformedBinaryAsInvalidArgument } from "./malformed-binary.js";
import { withNegotiationErrorBodies } from "./negotiation-errors.js";
import { FilesystemService } from "./services/filesystem/service.js";
import { ProcessService } from "./services/process/service.js";
import { vforkSpawner } from "./services/process/vfork-spawn.js";
import { EnvdState } from "./state.js";

export interface EnvdOptions {
  port: number;
  host?: string;
  /** The user requests act as when they name none; defaults to `user` when it exists, else `root`. */
  defaultUser?: string;
  /** Whether `/init`'s timestamp may set the system clock (only inside a sandbox, never on a host). */
  setClock?: boolean;
  /** Whether `/init` may set the hostname and its /etc/hosts line (inside a sandbox only). */
  setHostname?: boolean;
  /**
   * Let RPCs from loopback skip the access token. Inside a sandbox only: its own processes may act
   * as any user there anyway (passwordless sudo), and moat's sudo stand-in goes through envd.
   */
  trustLoopback?: boolean;
  logger?: Logger;
  passwdPath?: string;
  groupPath?: string;
}

export interface Envd {
  readonly server: http.Server;
  readonly port: number;
  readonly context: EnvdContext;
  close(): Promise<void>;
}

/** Largest unary request body; bigger bodies are refused with resource_exhausted. */
const MAX_RPC_BODY_BYTES = 16 * 1024 * 1024;
/**
 * Longest Connect-Timeout-Ms accepted (about 24.8 days), the most a Node timer holds: a longer one
 * would fire at once, ending the call (and killing a Start's process) as soon as it began.
 * Longer ones are refused with invalid_argument.
 */
const MAX_TIMEOUT_MS = 2_147_483_647;

/** Starts envd: Connect RPC services and the REST routes on one port. */
export async function startEnvd(options: EnvdOptions): Promise<Envd> {
  const logger = options.logger ?? createNoopLogger();
  const users = new UserDirectory(options.passwdPath, options.groupPath);
  const defaultUser = options.defaultUser ?? (users.lookup("user") ? "user" : "root");
  const context: EnvdContext = { state: new EnvdState(defaultUser), users, logger };

  const processes = new ProcessService(context);
  const filesystem = new FilesystemService(context);
  const app = createHTTPApp(context, {
    setClock: options.setClock ?? false,
    setHostname: options.setHostname ?? false,
  });

  const restListener = getRequestListener(app.fetch);
  const handler = connectNodeAdapter({
    routes(router) {
      router.service(Process, processes.implementation());
      router.service(Filesystem, filesystem.implementation());
      for (const [i, h] of router.handlers.entries())
        router.handlers[i] = withNegotiationErrorBodies(withMalformedBinaryAsInvalidArgument(h));
    },
    interceptors: [
      malformedBinaryInterceptor,
      accessTokenInterceptor(context, options.trustLoopback ?? false),
    ],
    contextValues: (req) => createContextValues().set(kRemoteAddress, req.socket.remoteAddress ?? ""),
    readMaxBytes: MAX_RPC_BODY_BYTES,
    maxTimeoutMs: MAX_TIMEOUT_MS,
    fallback: (req, res) => void restListener(req as http.IncomingMessage, res as http.ServerResponse),
  });

  // CORS preflights for RPC paths go to the REST app, which answers them; the Connect adapter
  // would refuse OPTIONS.
  const sockets = new Set<Socket>();
  const route = (req: http.IncomingMessage, res: http.ServerResponse) => {
    if (req.method === "POST" && req.url === "/freeze") freeze(req, res, context, sockets);
    else if (req.method === "OPTIONS") void restListener(req, res);
    else handler(req, res);
  };
  const server = http.createServer((req, res) => {
    // envd cannot export spans from inside the sandbox: the node's trace id goes in its log lines.
    const header = req.headers.traceparent;
    const traceId = traceIdOf(typeof header === "string" ? header : undefined);
    if (traceId) logContext.run({ traceId }, route, req, res);
    else route(req, res);
  });
  server.on("connection", (socket: Socket) => {
    sockets.add(socket);
    socket.once("close", () => sockets.delete(socket));
  });
  // Streams (process output, watches) may stay open indefinitely; keepalive messages keep them busy.
  server.requestTimeout = 0;
  // A client that goes silent (mid-upload, say) is dropped after this long without any bytes, so
  // its temp file and descriptor are released. Streams stay busy through keepalives.
  server.timeout = 10 * 60_000;
  server.headersTimeout = 60_000;
  server.keepAliveTimeout = 640_000;
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(options.port, options.host ?? "0.0.0.0", () => {
      server.off("error", reject);
      resolve();
    });
  });
  const port = (server.address() as AddressInfo).port;
  // How commands start: loaded here, not on the first command, so a template snapshot holds it.
  const spawner = vforkSpawner() ? "vfork" : "node";
  logger.info({ port, defaultUser, spawner }, "envd listening");

  return {
    server,
    port,
    context,
    async close() {
      await filesystem.close();
      await processes.close();
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

/**
 * POST /freeze, the node's call right before a checkpoint. First `sync`: gVisor caches file writes
 * in guest memory, and the sandbox's files on the host must be whole even if the memory image is
 * never used (a reboot-resume). Then it answers and resets every TCP connection envd holds (this
 * one too): gVisor cannot save a connected socket, and one it drops during the save can leave
 * the restored network stack unusable; a reset socket is simply gone. Clients see a reset, as
 * when a machine is suspended; the proxy refuses this path from outside.
 */
function freeze(
  req: http.IncomingMessage,
  res: http.ServerResponse,
  ctx: EnvdContext,
  sockets: Set<Socket>,
): void {
  const { logger } = ctx;
  // Resetting every connection is a denial of service to whoever does it uninvited.
  const presented = req.headers["x-access-token"];
  if (!presentsToken(ctx.state.accessToken, typeof presented === "string" ? presented : undefined)) {
    res.writeHead(401, { "content-type": "application/json" });
    res.end(
      JSON.stringify({ code: 401, message: "this sandbox is secured: /freeze needs its access token" }),
    );
    return;
  }
  forgetInodeNumbers();
  const started = performance.now();
  execFile("sync", (err) => {
    const syncMs = Math.round(performance.now() - started);
    if (err) {
      logger.error({ err, syncMs }, "sync before a checkpoint failed");
      res.writeHead(500, { "content-type": "application/json" });
      res.end(JSON.stringify({ code: 500, message: `sync failed: ${err.message}` }));
      return;
    }
    // Every other connection is reset now, before the answer: the checkpoint may begin the moment
    // the node reads it, and a reset still pending then would run after the restore, on whatever
    // connections exist by then. Only this request's own socket is reset after the answer.
    const own = res.socket;
    let count = 0;
    for (const socket of sockets) {
      if (socket === own) continue;
      socket.resetAndDestroy();
      sockets.delete(socket);
      count++;
    }
    logger.info({ connections: count, syncMs }, "files synced and connections reset for a checkpoint");
    res.writeHead(204, { connection: "close" });
    res.end(() => own?.resetAndDestroy());
  });
}

const kRemoteAddress = createContextKey("");
const LOOPBACK = new Set(["127.0.0.1", "::1", "::ffff:127.0.0.1"]);

/** Once `/init` set an access token, every RPC must present it in `X-Access-Token`. */
function accessTokenInterceptor(ctx: EnvdContext, trustLoopback: boolean): Interceptor {
  return (next) => async (req) => {
    const expected = ctx.state.accessToken;
    if (trustLoopback && LOOPBACK.has(req.contextValues.get(kRemoteAddress))) return next(req);
    if (expected !== undefined && !tokenMatches(expected, req.header.get("x-access-token"))) {
      throw new ConnectError("invalid access token", Code.Unauthenticated);
    }
    return next(req);
  };
}
