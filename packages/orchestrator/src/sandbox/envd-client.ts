import { once } from "node:events";
import http from "node:http";
import net, { type Socket } from "node:net";
import { ENVD_PORT } from "@moat/shared";
import { injectTraceHeaders } from "@moat/shared/telemetry";

export interface EnvdInit {
  envVars: Record<string, string>;
  accessToken?: string;
  defaultUser?: string;
  defaultWorkdir?: string;
  /** The sandbox's hostname (moat's addition: a sandbox restored from a snapshot has the template's). */
  hostname?: string;
}

/** Polls envd's /health at the sandbox's host address until it answers 204. */
export async function waitForEnvd(
  hostAddress: string,
  timeoutMs: number,
  signal?: AbortSignal,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  const url = `http://${hostAddress}:${ENVD_PORT}/health`;
  let lastError = "no answer";
  while (Date.now() < deadline) {
    signal?.throwIfAborted();
    try {
      const res = await fetch(url, { signal: AbortSignal.timeout(1000) });
      if (res.status === 204) return;
      lastError = `status ${res.status}`;
    } catch (err) {
      lastError =
        err instanceof Error ? (err.cause instanceof Error ? err.cause.message : err.message) : String(err);
    }
    await new Promise((r) => setTimeout(r, 5));
  }
  throw new Error(`envd at ${hostAddress} did not become ready within ${timeoutMs} ms (${lastError})`);
}

/**
 * POST /init: env vars, token, defaults and the clock, as the orchestrator does after every start.
 * The token goes in X-Access-Token too: a sandbox that has one (a resume) only accepts /init with
 * it, and one that has none yet ignores the header. A sandbox restored from another's snapshot
 * holds that one's token: `presentToken` proves it, and the body's token replaces it.
 */
export async function initEnvd(hostAddress: string, init: EnvdInit, presentToken?: string): Promise<void> {
  let proof = presentToken || init.accessToken;
  // A reset /init may have been applied: then the new token is the one to prove.
  let maybeApplied = false;
  for (let attempt = 1; ; attempt++) {
    let res: Response;
    try {
      res = await fetch(`http://${hostAddress}:${ENVD_PORT}/init`, {
        method: "POST",
        headers: { "content-type": "application/json", ...tokenHeader(proof), ...traceHeaders() },
        body: JSON.stringify({ ...init, timestamp: new Date().toISOString() }),
        signal: AbortSignal.timeout(10_000),
      });
    } catch (err) {
      // A sandbox restored from another's snapshot now and then resets a connection the node
      // just opened (about one fork in 60 under load); /init is idempotent, so it is sent again.
      if (attempt >= INIT_ATTEMPTS || !connectionReset(err)) throw err;
      maybeApplied = true;
      continue;
    }
    if (res.status === 401 && maybeApplied && proof !== init.accessToken && init.accessToken) {
      await res.arrayBuffer();
      proof = init.accessToken;
      continue;
    }
    if (res.status !== 204) throw new Error(`envd /init answered ${res.status}: ${await res.text()}`);
    await res.arrayBuffer();
    return;
  }
}

const INIT_ATTEMPTS = 3;

/** fetch's error for a connection the other side reset or closed before answering. */
function connectionReset(err: unknown): boolean {
  const cause = err instanceof Error ? (err.cause as { code?: string } | undefined) : undefined;
  return cause?.code === "ECONNRESET" || cause?.code === "UND_ERR_SOCKET";
}

/** The active trace's `traceparent` for envd, which logs its trace id (nothing when tracing is off). */
function traceHeaders(): Record<string, string> {
  const headers: Record<string, string> = {};
  injectTraceHeaders((name, value) => {
    headers[name] = value;
  });
  return headers;
}

/** X-Access-Token for a secured sandbox; nothing for one without a token. */
export function tokenHeader(accessToken: string | undefined): Record<string, string> {
  return accessToken ? { "x-access-token": accessToken } : {};
}

/**
 * How long /freeze may take. Its sync writes the guest's cached file data to the host and fsyncs
 * it there; on a host whose disk is busy writing back (earlier pauses' memory images, say) one
 * fsync can wait seconds for the filesystem's journal. A slow pause beats a failed one.
 */
const FREEZE_TIMEOUT_MS = 60_000;

/** The connection opened for /freeze closed before /freeze went out: the gate would drop a new one's SYN. */
class FreezeConnectionLostError extends Error {}

/** How often a freeze whose connection was lost is tried again (the gate reopened in between). */
const FREEZE_ATTEMPTS = 3;

/**
 * Readies a sandbox for a memory checkpoint: asks envd's /health, opens a fresh connection to envd,
 * runs `closeGate` (no new connections from now on), then sends POST /freeze as that connection's
 * first request; envd flushes the guest's file cache to disk and resets every connection it holds,
 * this one included. A fresh connection, not the one /health used: envd was seen closing a
 * keep-alive connection right after answering, and /freeze would then need a new connection, whose
 * SYN the gate drops. A connection lost before /freeze went out fails the attempt at once: the gate
 * reopens (`openGate`) and the freeze is tried again.
 */
export async function freezeEnvd(
  hostAddress: string,
  closeGate: () => Promise<void>,
  accessToken?: string,
  openGate?: () => Promise<void>,
): Promise<void> {
  for (let attempt = 1; ; attempt++) {
    try {
      await freezeOnce(hostAddress, closeGate, accessToken);
      return;
    } catch (err) {
      if (!(err instanceof FreezeConnectionLostError) || !openGate || attempt >= FREEZE_ATTEMPTS) throw err;
      await openGate();
    }
  }
}

async function freezeOnce(
  hostAddress: string,
  closeGate: () => Promise<void>,
  accessToken?: string,
): Promise<void> {
  const call = (method: string, urlPath: string, socket?: Socket, timeout = 10_000) =>
    new Promise<number>((resolve, reject) => {
      const req = http.request(
        {
          host: hostAddress,
          port: ENVD_PORT,
          method,
          path: urlPath,
          timeout,
          headers: tokenHeader(accessToken),
          // The given connection and no other (no agent): a second one would meet the gate.
          ...(socket ? { createConnection: () => socket } : { agent: false }),
        },
        (res) => {
          res.resume();
          res.once("error", reject);
          res.once("end", () => {
            const status = res.statusCode ?? 0;
            const own = res.socket;
            if (!socket || !own || own.destroyed) return resolve(status);
            // envd resets this connection once it has answered: when it is gone, envd is done.
            const timer = setTimeout(() => resolve(status), 1000);
            own.once("close", () => {
              clearTimeout(timer);
              resolve(status);
            });
          });
        },
      );
      req.once("timeout", () => req.destroy(new Error(`envd ${urlPath} timed out`)));
      req.once("error", reject);
      req.end();
    });
  const health = await call("GET", "/health");
  if (health !== 204) throw new Error(`envd /health answered ${health}`);
  const socket = net.connect({ host: hostAddress, port: ENVD_PORT });
  // A reset while the gate closes must not go unheard (an unhandled 'error' ends the process): it
  // shows as a closed socket below.
  socket.on("error", () => undefined);
  try {
    await once(socket, "connect", { signal: AbortSignal.timeout(10_000) }).catch((err: Error) => {
      throw err.name === "AbortError" ? new Error("connecting to envd timed out") : err;
    });
    await closeGate();
    if (socket.readyState !== "open") {
      throw new FreezeConnectionLostError("envd closed its connection before /freeze");
    }
    const status = await call("POST", "/freeze", socket, FREEZE_TIMEOUT_MS);
    if (status !== 204) throw new Error(`envd /freeze answered ${status}`);
  } finally {
    socket.destroy();
  }
}

/**
 * bash as the SDK runs it, minus the login scripts: a template's own scripts may do anything, and
 * a warm-up must not run them into a snapshot or into a pool entry before its /init.
 */
const WARM_ARGS = ["--noprofile", "--norc", "-c", "true"];

/**
 * Runs envd once through the paths every new sandbox uses first (/init, a process start, a file
 * stat), so that a snapshot taken afterwards holds them compiled: each restore skips that warm-up.
 */
export async function warmEnvd(hostAddress: string, port = ENVD_PORT): Promise<void> {
  const base = `http://${hostAddress}:${port}`;
  const json = { "content-type": "application/json" };
  const calls: Array<[string, RequestInit]> = [
    ["/init", { method: "POST", headers: json, body: "{}" }],
    ["/envs", { method: "GET" }],
    ["/filesystem.Filesystem/Stat", { method: "POST", headers: json, body: JSON.stringify({ path: "/" }) }],
    ["/process.Process/List", { method: "POST", headers: json, body: "{}" }],
    // bash, as the default user and as root: the snapshot then holds bash and its libraries in
    // memory, and envd's start path compiled, so that the first command of every sandbox restored
    // from it does not read them in.
    ...[{}, { authorization: `Basic ${Buffer.from("root:").toString("base64")}` }].map(
      (auth): [string, RequestInit] => [
        "/process.Process/Start",
        {
          method: "POST",
          headers: { "content-type": "application/connect+json", ...auth },
          body: envelope({ process: { cmd: "/bin/bash", args: WARM_ARGS } }),
        },
      ],
    ),
  ];
  for (let round = 0; round < 3; round++) {
    for (const [urlPath, init] of calls) {
      const res = await fetch(`${base}${urlPath}`, { ...init, signal: AbortSignal.timeout(10_000) });
      await res.arrayBuffer();
      if (!res.ok) throw new Error(`warming envd: ${urlPath} answered ${res.status}`);
    }
  }
}

/**
 * One bash through envd, right after a pool entry is restored and before any create
 * claims it: the first process a restored sandbox starts pays for runtime state a checkpoint does
 * not keep (gVisor's address-space stubs are host processes), and this one is off the claim's path.
 */
export async function warmFirstProcess(hostAddress: string, port = ENVD_PORT): Promise<void> {
  const res = await fetch(`http://${hostAddress}:${port}/process.Process/Start`, {
    method: "POST",
    headers: { "content-type": "application/connect+json" },
    body: envelope({ process: { cmd: "/bin/bash", args: WARM_ARGS } }),
    signal: AbortSignal.timeout(10_000),
  });
  await res.arrayBuffer();
  if (!res.ok) throw new Error(`warming a restored sandbox: envd answered ${res.status}`);
}

/** One Connect streaming envelope: flags byte, big-endian length, JSON. */
function envelope(message: unknown): Uint8Array {
  const body = Buffer.from(JSON.stringify(message));
  const out = Buffer.alloc(5 + body.length);
  out.writeUInt32BE(body.length, 1);
  body.copy(out, 5);
  return out;
}
