/**
 * GET requests for image pulls, made so that a registry cannot turn them against the node:
 * every connection (the registry, its token service, each redirect hop) is checked against the
 * allow list at the address actually connected to; plain HTTP only where the operator allows it;
 * redirects followed here (a bounded number), with credentials only ever sent to the origin they
 * belong to; response sizes bounded.
 */
import http from "node:http";
import https from "node:https";
import type { Socket } from "node:net";
import net from "node:net";
import { filteredLookup, normalizeHost, type RegistryAllowList } from "./address-policy.js";

const MAX_REDIRECTS = 5;
/** A socket idle this long (no connection, headers or body bytes) fails the request. */
const IDLE_TIMEOUT_MS = 60_000;

export class RegistryError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "RegistryError";
  }
}

export interface GetOptions {
  allow: RegistryAllowList;
  headers?: Record<string, string>;
  /** An Authorization header for `origin` alone: never sent to a host a redirect leads to. */
  auth?: { origin: string; authorization: string };
  signal?: AbortSignal;
}

export interface GetResponse {
  /** Where the answer came from (after redirects). */
  url: URL;
  status: number;
  headers: http.IncomingHttpHeaders;
  body: http.IncomingMessage;
}

/** `host:port` of a URL, its default port filled in. */
export function portOf(url: URL): number {
  return Number(url.port || (url.protocol === "https:" ? 443 : 80));
}

/** GET `url`, following redirects (each hop checked). The caller consumes or destroys the body. */
export async function guardedGet(url: URL, options: GetOptions): Promise<GetResponse> {
  let current = url;
  for (let hop = 0; ; hop++) {
    const res = await requestOnce(current, options);
    const location = res.headers.location;
    if (![301, 302, 303, 307, 308].includes(res.status) || !location) return res;
    res.body.resume();
    if (hop >= MAX_REDIRECTS) {
      throw new RegistryError(`${describeURL(url)} redirected more than ${MAX_REDIRECTS} times`);
    }
    try {
      current = new URL(location, current);
    } catch {
      throw new RegistryError(`${describeURL(current)} redirected to an invalid address`);
    }
  }
}

function requestOnce(url: URL, options: GetOptions): Promise<GetResponse> {
  const { allow } = options;
  const host = normalizeHost(url.hostname);
  const port = portOf(url);
  if (url.protocol !== "https:" && url.protocol !== "http:") {
    return Promise.reject(
      new RegistryError(`refusing ${url.protocol} URL ${describeURL(url)}: only https is used`),
    );
  }
  if (url.protocol === "http:" && !allow.allowsPlainHttp(host, port)) {
    return Promise.reject(
      new RegistryError(
        `refusing plain HTTP to ${describeURL(url)}: registries speak https unless the node's operator ` +
          "allows plain HTTP for them (MOAT_REGISTRY_ALLOW=http://host:port)",
      ),
    );
  }
  if (net.isIP(host)) {
    const refusal = allow.refusal(host, host, port);
    if (refusal) return Promise.reject(new RegistryError(refusal));
  }
  const headers: Record<string, string> = { "user-agent": "moat", ...options.headers };
  if (options.auth && options.auth.origin === url.origin) headers.authorization = options.auth.authorization;
  return new Promise((resolve, reject) => {
    const req = (url.protocol === "https:" ? https : http).request(url, {
      method: "GET",
      headers,
      agent: false,
      lookup: filteredLookup(allow, host, port),
      timeout: IDLE_TIMEOUT_MS,
      signal: options.signal,
    });
    // The lookup only offers allowed addresses; this checks the one connected to, whatever the path.
    req.on("socket", (socket: Socket) => {
      const verify = () => {
        const refusal = socket.remoteAddress && allow.refusal(socket.remoteAddress, host, port);
        if (refusal) req.destroy(new RegistryError(refusal));
      };
      if (socket.connecting) socket.once("connect", verify);
      else verify();
    });
    req.on("timeout", () =>
      req.destroy(new RegistryError(`${describeURL(url)} did not answer for ${IDLE_TIMEOUT_MS / 1000} s`)),
    );
    req.on("error", (err: NodeJS.ErrnoException) => {
      if (err instanceof RegistryError || err.name === "AbortError") reject(err);
      else if (err.code === "EMOATREFUSED") reject(new RegistryError(err.message));
      else reject(new RegistryError(`could not reach ${describeURL(url)}: ${err.code ?? err.message}`));
    });
    req.on("response", (body) => {
      // Whoever reads the body sees its errors; one nobody reads must not crash the node.
      body.on("error", () => undefined);
      body.setTimeout(IDLE_TIMEOUT_MS, () =>
        body.destroy(
          new RegistryError(`${describeURL(url)} stopped sending for ${IDLE_TIMEOUT_MS / 1000} s`),
        ),
      );
      resolve({ url, status: body.statusCode ?? 0, headers: body.headers, body });
    });
    req.end();
  });
}

/** A response body of at most `max` bytes (more fails: registries answer small JSON documents). */
export async function readBounded(res: GetResponse, max: number, what: string): Promise<Buffer> {
  const declared = Number(res.headers["content-length"] ?? Number.NaN);
  if (declared > max) {
    res.body.destroy();
    throw new RegistryError(`${what} is ${declared} bytes, more than the ${max} allowed`);
  }
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of res.body as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > max) {
      res.body.destroy();
      throw new RegistryError(`${what} is more than the ${max} bytes allowed`);
    }
    chunks.push(chunk);
  }
  return Buffer.concat(chunks);
}

/** scheme://host[:port]/path of a URL, without its query (tokens live there) or credentials. */
export function describeURL(url: URL): string {
  return `${url.protocol}//${url.host}${url.pathname.length > 80 ? `${url.pathname.slice(0, 80)}…` : url.pathname}`;
}
