/**
 * The dashboard's calls to moat's REST API (the same routes the E2B SDK uses), signed in with what
 * the sign-in page kept in sessionStorage: an API key or an access token, and optionally the
 * operator's admin token. sessionStorage, not localStorage: the secret ends with the tab.
 */

export interface Credentials {
  /** "key": X-API-Key; "token": Authorization: Bearer. */
  kind: "key" | "token";
  secret: string;
  adminToken?: string;
}

const STORAGE_KEY = "moat.dashboard.credentials";

export function loadCredentials(): Credentials | undefined {
  try {
    const parsed = JSON.parse(sessionStorage.getItem(STORAGE_KEY) ?? "null") as Credentials | null;
    if (parsed && (parsed.kind === "key" || parsed.kind === "token") && typeof parsed.secret === "string") {
      return parsed;
    }
  } catch {
    // Unreadable: signed out.
  }
  return undefined;
}

export function saveCredentials(credentials: Credentials | undefined): void {
  if (credentials) sessionStorage.setItem(STORAGE_KEY, JSON.stringify(credentials));
  else sessionStorage.removeItem(STORAGE_KEY);
}

/** An API error: its HTTP status and the `{code, message}` body's message. */
export class APIError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

/** Raised on 401: the page signs out and shows the sign-in form with this message. */
export const UNAUTHORIZED_EVENT = "moat:unauthorized";

export async function call<T>(
  method: string,
  path: string,
  options: { body?: unknown; admin?: boolean; credentials?: Credentials } = {},
): Promise<T> {
  const credentials = options.credentials ?? loadCredentials();
  const headers: Record<string, string> = { Accept: "application/json" };
  if (credentials) {
    if (options.admin) headers["X-Admin-Token"] = credentials.adminToken ?? "";
    else if (credentials.kind === "key") headers["X-API-Key"] = credentials.secret;
    else headers.Authorization = `Bearer ${credentials.secret}`;
  }
  if (options.body !== undefined) headers["Content-Type"] = "application/json";
  let response: Response;
  try {
    response = await fetch(path, {
      method,
      headers,
      body: options.body === undefined ? null : JSON.stringify(options.body),
      credentials: "omit",
      cache: "no-store",
    });
  } catch (error) {
    throw new APIError(0, `The API did not answer (${String(error)}): is moat running?`);
  }
  const text = await response.text();
  let parsed: unknown;
  try {
    parsed = text === "" ? undefined : JSON.parse(text);
  } catch {
    parsed = undefined;
  }
  if (!response.ok) {
    const message =
      parsed && typeof parsed === "object" && typeof (parsed as { message?: unknown }).message === "string"
        ? (parsed as { message: string }).message
        : `${response.status} ${response.statusText}`;
    if (response.status === 401 && !options.admin && !options.credentials) {
      window.dispatchEvent(new CustomEvent(UNAUTHORIZED_EVENT, { detail: message }));
    }
    throw new APIError(response.status, message);
  }
  return parsed as T;
}

export interface ListedSandbox {
  sandboxID: string;
  templateID: string;
  alias?: string;
  clientID: string;
  startedAt: string;
  endAt: string;
  cpuCount: number;
  memoryMB: number;
  diskSizeMB: number;
  metadata?: Record<string, string>;
  state: "running" | "paused";
}

export interface SandboxDetail extends ListedSandbox {
  domain?: string | null;
}

export interface SandboxMetric {
  timestamp: string;
  timestampUnix: number;
  cpuCount: number;
  cpuUsedPct: number;
  memUsed: number;
  memTotal: number;
  diskUsed: number;
  diskTotal: number;
}

export interface LogEntry {
  timestamp: string;
  level: string;
  message: string;
  fields?: Record<string, string>;
}

export const enc = encodeURIComponent;

export function errorTextOf(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
