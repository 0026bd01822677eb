/**
 * How the operator commands (`moat status | sandboxes | keys | teams`) reach a running API: its
 * URL, and the credential each command needs: the admin token for the operator's routes, an API
 * key for a team's. Each comes from its flag, then its environment variable, then, on the box
 * `moat up` runs on (as root), the `.env` that `moat up` writes in its data directory. Secrets read
 * from that file go only to the API that file names, never to another `--api-url`.
 */
import { readFile } from "node:fs/promises";
import path from "node:path";
import { DEFAULT_DATA_DIR } from "@moat/orchestrator";
import { type Command, Option } from "commander";
import { parseHTTPURL } from "../args/fleet.js";

/** Where the commands write, and how they end on an error (tests collect them). */
export interface CommandIO {
  out(text: string): void;
  err(text: string): void;
  exit(code: number): never;
  /** Whether `out` is a terminal (tables) rather than a pipe. */
  readonly isTTY: boolean;
  /** Waits between polls (`logs --follow`); false: stop polling (tests). */
  sleep(ms: number): Promise<boolean>;
}

export const processIO: CommandIO = {
  out: (text) => process.stdout.write(text),
  err: (text) => process.stderr.write(text),
  exit: (code) => process.exit(code),
  get isTTY() {
    return process.stdout.isTTY === true;
  },
  sleep: (ms) => new Promise((resolve) => setTimeout(() => resolve(true), ms)),
};

export interface ConnectionOptions {
  apiUrl?: string;
  adminToken?: string;
  apiKey?: string;
  dataDir: string;
  json?: boolean;
}

/** The API `moat up` listens on by default. */
export const DEFAULT_API_URL = "http://127.0.0.1:3000";

/** Adds --api-url, --admin-token, --api-key, --data-dir and --json to a command. */
export function withConnection(cmd: Command, { apiKey = false, adminToken = false } = {}): Command {
  cmd.addOption(
    new Option("--api-url <url>", `the API (default: moat up's, ${DEFAULT_API_URL})`)
      .env("MOAT_API_URL")
      .argParser(parseHTTPURL),
  );
  if (adminToken) {
    cmd.addOption(
      new Option("--admin-token <token>", "the API's admin token (prefer the environment variable)").env(
        "MOAT_ADMIN_TOKEN",
      ),
    );
  }
  if (apiKey) {
    cmd.addOption(
      new Option("--api-key <key>", "a team's API key (prefer the environment variable)").env("E2B_API_KEY"),
    );
  }
  return cmd
    .addOption(
      new Option("--data-dir <dir>", "moat up's data directory, whose .env has its URL and tokens (as root)")
        .env("MOAT_DATA_DIR")
        .default(DEFAULT_DATA_DIR),
    )
    .option("--json", "print JSON (for scripts) instead of tables");
}

/** An answer of the API that is not a success. */
export class APIError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

export interface Connection {
  apiURL: string;
  /** Where the credentials came from, for error messages. */
  adminToken?: string;
  apiKey?: string;
  /** The client proxy of moat up, when its .env names it. */
  proxyURL?: string;
  envFile: string;
}

/** Reads `KEY=value` lines; a missing or unreadable file (not root) is empty. */
export async function readEnvFile(file: string): Promise<Record<string, string>> {
  const text = await readFile(file, "utf8").catch(() => "");
  const out: Record<string, string> = {};
  for (const line of text.split("\n")) {
    const eq = line.indexOf("=");
    if (eq > 0) out[line.slice(0, eq).trim()] = line.slice(eq + 1).trim();
  }
  return out;
}

/** Resolves the API's URL and the credentials, as the module comment says. */
export async function connect(opts: ConnectionOptions): Promise<Connection> {
  const envFile = path.join(opts.dataDir, ".env");
  const local = await readEnvFile(envFile);
  const localURL = local.E2B_API_URL ? local.E2B_API_URL.replace(/\/+$/, "") : undefined;
  const apiURL = opts.apiUrl ?? localURL ?? DEFAULT_API_URL;
  // The file's secrets belong to the API the file names.
  const sameAPI = localURL !== undefined && localURL === apiURL;
  return {
    apiURL,
    adminToken: opts.adminToken || (sameAPI ? local.MOAT_ADMIN_TOKEN : undefined) || undefined,
    apiKey: opts.apiKey || (sameAPI ? local.E2B_API_KEY : undefined) || undefined,
    proxyURL: sameAPI ? local.E2B_SANDBOX_URL : undefined,
    envFile,
  };
}

/** Fails with what to do when the connection has no admin token. */
export function requireAdminToken(conn: Connection): string {
  if (conn.adminToken) return conn.adminToken;
  throw new APIError(
    0,
    `no admin token: set MOAT_ADMIN_TOKEN (or --admin-token), or run as root on the machine of moat up (it reads ${conn.envFile})`,
  );
}

/** Fails with what to do when the connection has no API key. */
export function requireAPIKey(conn: Connection): string {
  if (conn.apiKey) return conn.apiKey;
  throw new APIError(
    0,
    `no API key: set E2B_API_KEY (or --api-key), or run as root on the machine of moat up (it reads ${conn.envFile})`,
  );
}

export interface CallOptions {
  method?: string;
  body?: unknown;
  /** Credentials sent with the call. */
  auth: { adminToken: string } | { apiKey: string } | "none";
  /** Sees the answer's headers (paging). */
  onHeaders?: (headers: Headers) => void;
}

/**
 * One call to the API: the parsed JSON answer (undefined for 204), or an APIError with the API's
 * message and a hint for the usual mistakes.
 */
export async function call<T>(conn: Connection, path: string, options: CallOptions): Promise<T> {
  const headers: Record<string, string> = {};
  if (options.auth !== "none") {
    if ("adminToken" in options.auth) headers["X-Admin-Token"] = options.auth.adminToken;
    else headers["X-API-Key"] = options.auth.apiKey;
  }
  if (options.body !== undefined) headers["Content-Type"] = "application/json";
  let res: Response;
  try {
    res = await fetch(`${conn.apiURL}${path}`, {
      method: options.method ?? "GET",
      headers,
      body: options.body === undefined ? undefined : JSON.stringify(options.body),
      signal: AbortSignal.timeout(30_000),
    });
  } catch (err) {
    throw new APIError(
      0,
      `cannot reach the API at ${conn.apiURL} (${(err as Error).cause instanceof Error ? ((err as Error).cause as Error).message : (err as Error).message}): is moat up running? Otherwise set --api-url / MOAT_API_URL`,
    );
  }
  const text = await res.text();
  options.onHeaders?.(res.headers);
  if (!res.ok) {
    let message = text.slice(0, 500);
    try {
      message = (JSON.parse(text) as { message?: string }).message ?? message;
    } catch {}
    if (res.status === 401 && options.auth !== "none") {
      message +=
        "adminToken" in options.auth
          ? " (check MOAT_ADMIN_TOKEN / --admin-token)"
          : " (check E2B_API_KEY / --api-key)";
    }
    if (res.status === 404 && /^no route for/.test(message) && path.startsWith("/admin")) {
      message = "the API has no admin routes: it was started without MOAT_ADMIN_TOKEN";
    }
    throw new APIError(res.status, `the API answered ${res.status}: ${message}`);
  }
  if (res.status === 204 || text === "") return undefined as T;
  try {
    return JSON.parse(text) as T;
  } catch {
    return text as T;
  }
}

/** Runs a command's body; an APIError (or any error) ends it with its message and status 1. */
export async function run(io: CommandIO, name: string, body: () => Promise<void>): Promise<void> {
  try {
    await body();
  } catch (err) {
    io.err(`moat ${name}: ${err instanceof Error ? err.message : String(err)}\n`);
    io.exit(1);
  }
}
