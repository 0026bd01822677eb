import { execFile } from "node:child_process";
import { appendFile, readFile } from "node:fs/promises";
import os from "node:os";
import { promisify } from "node:util";
import { ENVD_VERSION } from "@moat/shared";
import type { Handler } from "hono";
import { presentsToken } from "../auth/access-token.js";
import type { EnvdContext } from "../context.js";
import { type HTTPEnv, nodeRequest } from "./bindings.js";
import { readJSON } from "./body.js";
import { HTTPError } from "./errors.js";
import { HostnameSetter } from "./hostname.js";

const execFileAsync = promisify(execFile);

/** /init bodies are small (env vars, a token, maybe a CA bundle); anything bigger is refused. */
const MAX_INIT_BODY_BYTES = 4 * 1024 * 1024;

export interface InitOptions {
  /** Whether `timestamp` may set the system clock (inside a sandbox only). */
  setClock: boolean;
  /** Whether `hostname` may set the hostname and /etc/hosts (inside a sandbox only). */
  setHostname: boolean;
}

/** What an /init body may carry once validated; absent or null fields leave the state alone. */
export interface InitRequest {
  envVars?: Record<string, string>;
  accessToken?: string;
  timestamp?: Date;
  defaultUser?: string;
  defaultWorkdir?: string;
  hostname?: string;
}

/**
 * POST /init: the orchestrator's configuration call, on start and again after every resume. It
 * must stay idempotent: the same body twice gives the same state. Answers 204 with the envd
 * version, as the orchestrator checks it.
 */
export function init(ctx: EnvdContext, options: InitOptions): Handler<HTTPEnv> {
  // Armed at envd's start (once it listens: the spawn does not hold up its first answer), so a
  // template snapshot holds it, as does every sandbox restored from one, ready to set the name
  // the first /init gives without an exec.
  const hostnames = options.setHostname ? new HostnameSetter() : undefined;
  if (hostnames) setImmediate(() => hostnames.arm());
  return async (c) => {
    const { state, logger } = ctx;
    // Once a token is set, only its holder may configure the sandbox again (env vars such as
    // BASH_FUNC_…, the default user, the clock): the token in X-Access-Token or, as E2B's
    // orchestrator sends it, the same token in the body. Checked before anything changes. With
    // the token in X-Access-Token the body may name another, which replaces it: the node gives
    // each fork of a sandbox its own (a fork wakes with its source's).
    const header = c.req.header("x-access-token") || undefined;
    if (header !== undefined && !presentsToken(state.accessToken, header)) throw unauthorizedInit();
    const body = parseInitRequest(await readJSON(nodeRequest(c), MAX_INIT_BODY_BYTES));
    if (header === undefined && !presentsToken(state.accessToken, body.accessToken)) throw unauthorizedInit();
    if (body.defaultUser !== undefined && !ctx.users.lookup(body.defaultUser)) {
      throw new HTTPError(400, `defaultUser: unknown user '${body.defaultUser}'`);
    }
    if (body.timestamp && options.setClock) await setClock(body.timestamp, ctx);
    if (body.hostname && hostnames) {
      // Not awaited: it overlaps the client's first round trips instead of delaying the answer;
      // process starts wait for it (EnvdState.settling).
      const previous = state.settling;
      state.settling = previous
        .then(() => setHostname(body.hostname!, hostnames))
        .catch((err: unknown) => logger.error({ err }, "setting the hostname failed"));
    }
    for (const [key, value] of Object.entries(body.envVars ?? {})) state.envVars.set(key, value);
    if (body.accessToken !== undefined) state.accessToken = body.accessToken;
    if (body.defaultUser !== undefined) state.defaultUser = body.defaultUser;
    if (body.defaultWorkdir !== undefined) state.defaultWorkdir = body.defaultWorkdir;
    // At info: with the node's trace id (server.ts), the line that ties a create or resume to envd.
    logger.info(
      {
        envVars: Object.keys(body.envVars ?? {}).length,
        secured: state.accessToken !== undefined,
        defaultUser: state.defaultUser,
        defaultWorkdir: state.defaultWorkdir,
      },
      "envd initialised",
    );
    c.header("X-Envd-Version", ENVD_VERSION);
    c.header("Cache-Control", "no-store");
    return c.body(null, 204);
  };
}

function unauthorizedInit(): HTTPError {
  return new HTTPError(401, "this sandbox is secured: /init needs its access token in X-Access-Token");
}

/** Checks the shape of an /init body; every wrong type is a 400 naming the field. */
export function parseInitRequest(raw: unknown): InitRequest {
  if (raw === undefined || raw === null) return {};
  if (typeof raw !== "object" || Array.isArray(raw)) throw new HTTPError(400, "body must be a JSON object");
  const body = raw as Record<string, unknown>;
  const out: InitRequest = {};

  const envVars = body.envVars;
  if (envVars != null) {
    if (typeof envVars !== "object" || Array.isArray(envVars)) {
      throw new HTTPError(400, "envVars must be an object of strings");
    }
    for (const [key, value] of Object.entries(envVars)) {
      if (typeof value !== "string") throw new HTTPError(400, `envVars.${key} must be a string`);
      if (key === "" || key.includes("=") || key.includes("\0") || value.includes("\0")) {
        throw new HTTPError(400, `envVars: invalid variable '${key}'`);
      }
    }
    out.envVars = envVars as Record<string, string>;
  }
  const accessToken = optionalString(body, "accessToken");
  if (accessToken !== undefined) {
    if (accessToken === "") throw new HTTPError(400, "accessToken must not be empty");
    out.accessToken = accessToken;
  }
  const timestamp = optionalString(body, "timestamp");
  if (timestamp !== undefined) {
    const date = new Date(timestamp);
    if (Number.isNaN(date.getTime())) throw new HTTPError(400, "timestamp must be an RFC 3339 date");
    out.timestamp = date;
  }
  const defaultUser = optionalString(body, "defaultUser");
  if (defaultUser !== undefined && defaultUser !== "") out.defaultUser = defaultUser;
  const defaultWorkdir = optionalString(body, "defaultWorkdir");
  if (defaultWorkdir !== undefined && defaultWorkdir !== "") {
    if (!defaultWorkdir.startsWith("/") || defaultWorkdir.includes("\0")) {
      throw new HTTPError(400, "defaultWorkdir must be an absolute path");
    }
    out.defaultWorkdir = defaultWorkdir;
  }
  const hostname = optionalString(body, "hostname");
  if (hostname !== undefined) {
    if (!HOSTNAME.test(hostname)) throw new HTTPError(400, "hostname must be a lowercase DNS label");
    out.hostname = hostname;
  }
  // Accepted for compatibility, not used by moat.
  for (const key of ["hyperloopIP", "lifecycleID", "caBundle"]) optionalString(body, key);
  const mounts = body.volumeMounts;
  if (mounts != null) {
    const valid =
      Array.isArray(mounts) &&
      mounts.every(
        (m: unknown) =>
          typeof m === "object" &&
          m !== null &&
          typeof (m as Record<string, unknown>).nfs_target === "string" &&
          typeof (m as Record<string, unknown>).path === "string",
      );
    if (!valid) throw new HTTPError(400, "volumeMounts must be an array of {nfs_target, path}");
  }
  return out;
}

function optionalString(body: Record<string, unknown>, key: string): string | undefined {
  const value = body[key];
  if (value == null) return undefined;
  if (typeof value !== "string") throw new HTTPError(400, `${key} must be a string`);
  return value;
}

const HOSTNAME = /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/;

/**
 * moat's addition to /init: a sandbox started from a template snapshot (or a warm pool) wakes up
 * with the template sandbox's hostname, so the node names it here. Also makes the name resolve,
 * as in a VM. Idempotent: nothing runs when both are already right. The name and its
 * /etc/hosts line are set side by side.
 */
async function setHostname(hostname: string, hostnames: HostnameSetter): Promise<void> {
  const name = async () => {
    if (os.hostname() !== hostname) await hostnames.set(hostname);
    else hostnames.dismiss();
  };
  const line = async () => {
    const hosts = await readFile("/etc/hosts", "utf8").catch(() => "127.0.0.1 localhost\n");
    const known = hosts.split("\n").some((l) => l.split(/\s+/).slice(1).includes(hostname));
    if (!known) await appendFile("/etc/hosts", `${hosts.endsWith("\n") ? "" : "\n"}127.0.1.1 ${hostname}\n`);
  };
  await Promise.all([name(), line()]);
}

/** Whether the clock (`now`) is behind `timestamp` by a second or more: only then is it set. */
export function clockBehind(now: number, timestamp: number): boolean {
  return timestamp - now >= 1000;
}

/**
 * Sets the system clock after a resume (the snapshot's clock is stale), forward only: a sandbox's
 * clock only ever falls behind, and a clock moved back would let a replayed or delayed /init
 * rewind time under the sandbox's processes (expired certificates and tokens valid again, file
 * times out of order). Failures are only logged.
 */
async function setClock(timestamp: Date, ctx: EnvdContext): Promise<void> {
  if (!clockBehind(Date.now(), timestamp.getTime())) return;
  try {
    await execFileAsync("date", ["-u", "-s", `@${(timestamp.getTime() / 1000).toFixed(3)}`], {
      timeout: 5000,
    });
  } catch (err) {
    ctx.logger.error({ err }, "failed to set the system clock");
  }
}
