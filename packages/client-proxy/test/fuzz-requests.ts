/**
 * What the proxy fuzzers send and check, shared by the in-process fuzzing (fuzz.test.ts, a memory
 * catalog) and the fuzzing of `moat up`'s proxy (tests/integration/fuzz/proxy.test.ts): requests
 * with random and malformed routing headers, Host names, tokens, methods, paths (envd's reserved
 * ones in many spellings) and upgrades; raw malformed HTTP; and the rules for the answers.
 */
import net from "node:net";
import fc from "fast-check";
import { CONNECT_CODES } from "../../api/test/fuzz/check.js";
import type { RawAnswer, RawRequest } from "../../api/test/fuzz/http.js";
import { headerValue, oddString } from "../../api/test/fuzz/strings.js";

export interface ProxyTargets {
  domain: string;
  proxyPort: number;
  /**
   * envd's port, where the reserved paths are refused: "49983" against `moat up`. In-process
   * fuzzing leaves it out (any loopback address's 49983 may be a host envd of another test).
   */
  envdPort?: string;
  /** Sandbox ids the catalog knows (running, paused, …) and ones it does not. */
  sandboxIDs: string[];
  /** Ports worth aiming at besides envd's (open or closed ones). */
  ports: string[];
  /** Tokens that are right for some sandbox. */
  accessTokens: string[];
  trafficTokens: string[];
}

/** The proxy's own 502 answers (e2b-protocol's documented ones). */
const DOCUMENTED_502 = new Set([
  "The sandbox was not found",
  "The sandbox is running but port is not open",
  "The sandbox is not reachable",
]);
/** Keys the proxy's JSON errors may carry beside code and message. */
const PROXY_KEYS = new Set([
  "code",
  "message",
  "sandboxId",
  "port",
  "path",
  "connectionLimit",
  "details",
  "requestId",
]);

export type ProxyRequest = RawRequest & { how: string };

export function proxyRequests(t: ProxyTargets): fc.Arbitrary<ProxyRequest> {
  const known = t.sandboxIDs[0] ?? "unknown";
  const ENVD_PORT = t.envdPort ?? t.ports[0]!;
  const sandboxID = fc.oneof(
    { weight: 4, arbitrary: fc.constantFrom(...t.sandboxIDs, "doesnotexist0000") },
    {
      weight: 1,
      arbitrary: fc.constantFrom(
        known.toUpperCase(),
        ` ${known}`,
        `${known},${known}`,
        "",
        "a-b",
        "a.b",
        "0",
      ),
    },
    { weight: 1, arbitrary: headerValue() },
  );
  const port = fc.oneof(
    { weight: 4, arbitrary: fc.constantFrom(ENVD_PORT, ...t.ports) },
    {
      weight: 1,
      arbitrary: fc.constantFrom(
        "0",
        "65536",
        "049983",
        "+80",
        "80a",
        " 80",
        "-1",
        "1e3",
        "99999999999999999999",
        "",
      ),
    },
    { weight: 1, arbitrary: headerValue() },
  );
  const host = fc.oneof(
    {
      weight: 3,
      arbitrary: fc.constantFrom(
        "localhost",
        "127.0.0.1",
        `127.0.0.1:${t.proxyPort}`,
        "[::1]",
        `sandbox.${t.domain}`,
        `SANDBOX.${t.domain.toUpperCase()}.`,
      ),
    },
    { weight: 3, arbitrary: fc.tuple(port, sandboxID).map(([p, id]) => `${p}-${id}.${t.domain}`) },
    {
      weight: 1,
      arbitrary: fc.constantFrom(
        "",
        `${ENVD_PORT}-${known}`,
        `-${known}.${t.domain}`,
        `${ENVD_PORT}-.${t.domain}`,
        `${ENVD_PORT}-${known}.`,
        `${ENVD_PORT}-${known}.${t.domain}:notaport`,
        `[${ENVD_PORT}-${known}.${t.domain}]`,
        "[::1",
        "a:b:c",
        `${ENVD_PORT}-${known}-${known}.${t.domain}`,
      ),
    },
    { weight: 1, arbitrary: headerValue() },
  );
  const token = (right: string[]) =>
    fc.oneof(
      { weight: 2, arbitrary: fc.constant<string | undefined>(undefined) },
      ...(right.length ? [{ weight: 2, arbitrary: fc.constantFrom(...right) }] : []),
      { weight: 1, arbitrary: fc.constantFrom("", `${right[0] ?? ""}x`, (right[0] ?? "").toUpperCase()) },
      { weight: 1, arbitrary: headerValue() },
    );
  const path = fc.oneof(
    {
      weight: 3,
      arbitrary: fc.constantFrom(
        "/",
        "/health",
        "/envs",
        "/metrics",
        "/files?path=/etc/hostname",
        "/process.Process/List",
      ),
    },
    {
      weight: 2,
      arbitrary: fc.constantFrom(
        "/init",
        "/INIT",
        "/%69nit",
        "//init",
        "/init/",
        "/./init",
        "/a/../init",
        "/init?x=1",
        "/init#frag",
        "/freeze",
        "/%2e%2e/freeze",
        "/unfreeze",
        "/fsfreeze",
        "/fsthaw",
        "/collapse",
        "/upgrade",
        "\\init",
        "/%5Cinit",
        "/init%00",
        "/%",
        "*",
        `http://${ENVD_PORT}-${known}.${t.domain}/init`,
      ),
    },
    {
      weight: 1,
      arbitrary: oddString({ maxHuge: 6_000 }).map(
        (s) => `/${encodeURIComponent(s.replace(/[\ud800-\udfff]/g, "?"))}`,
      ),
    },
  );
  return fc
    .record({
      method: fc.constantFrom("GET", "GET", "POST", "HEAD", "OPTIONS", "DELETE", "PUT", "PATCH", "CONNECT"),
      path,
      host: fc.option(host, { freq: 8 }),
      idHeader: fc.option(sandboxID, { freq: 2 }),
      portHeader: fc.option(port, { freq: 2 }),
      traffic: token(t.trafficTokens),
      access: token(t.accessTokens),
      html: fc.boolean(),
      upgrade: fc.constantFrom(false, false, false, true),
      body: fc.option(fc.uint8Array({ maxLength: 2_000 }), { freq: 4 }),
    })
    .map((r): ProxyRequest => {
      const headers: Record<string, string> = {};
      if (r.host !== null) headers.Host = r.host;
      if (r.idHeader !== null) headers["E2b-Sandbox-Id"] = r.idHeader;
      if (r.portHeader !== null) headers["E2b-Sandbox-Port"] = r.portHeader;
      if (r.traffic !== undefined) headers["E2b-Traffic-Access-Token"] = r.traffic;
      if (r.access !== undefined) headers["X-Access-Token"] = r.access;
      if (r.html) headers.Accept = "text/html,application/xhtml+xml";
      if (r.upgrade) {
        headers.Connection = "Upgrade";
        headers.Upgrade = "websocket";
        headers["Sec-WebSocket-Key"] = "dGhlIHNhbXBsZSBub25jZQ==";
        headers["Sec-WebSocket-Version"] = "13";
      }
      const withBody = r.body !== null && !["GET", "HEAD", "CONNECT"].includes(r.method);
      return {
        method: r.method,
        target: r.path,
        headers,
        body: withBody ? Buffer.from(r.body!) : undefined,
        how: JSON.stringify(headers).slice(0, 600),
      };
    });
}

/**
 * Problems with an answer through the proxy: a 5xx other than the documented 502s, or an error
 * whose body is not JSON `{code, message, …}` (HTML only for a client that asked for it). Errors
 * from envd behind the proxy carry a Connect code name instead of the status.
 */
export function proxyAnswerProblems(
  answer: RawAnswer,
  req: RawRequest,
  options: { fromUpstream?: (answer: RawAnswer) => boolean } = {},
): string[] {
  const { status } = answer;
  const problems: string[] = [];
  // What a sandbox's own server answers passes through as it is: it is the sandbox's business.
  if (options.fromUpstream?.(answer)) return problems;
  if (status >= 500 && status !== 502) problems.push(`server error ${status}`);
  if (status < 400 || req.method === "HEAD") return problems;
  const type = answer.headers.get("content-type") ?? "";
  const accept = Object.entries(req.headers).find(([k]) => k.toLowerCase() === "accept")?.[1] ?? "";
  if (/^text\/html/.test(type)) {
    if (!/\btext\/html\b/i.test(accept))
      problems.push(`an HTML error ${status} for a client that did not ask for it`);
    return problems;
  }
  if (!/^application\/json/.test(type)) {
    return [...problems, `error ${status} with content type '${type}': ${answer.text.slice(0, 200)}`];
  }
  let body: Record<string, unknown>;
  try {
    body = JSON.parse(answer.text) as Record<string, unknown>;
  } catch {
    return [...problems, `error ${status} with a body that is not JSON: ${answer.text.slice(0, 200)}`];
  }
  if (typeof body.message !== "string" || body.message === "") problems.push("error without a message");
  if (body.code !== status && !(typeof body.code === "string" && CONNECT_CODES.has(body.code))) {
    problems.push(`error ${status} with code ${JSON.stringify(body.code)}`);
  }
  const extra = Object.keys(body).filter((k) => !PROXY_KEYS.has(k));
  if (extra.length) problems.push(`error with unexpected keys ${extra.join(", ")}`);
  if (status === 502 && !DOCUMENTED_502.has(String(body.message))) {
    problems.push(`undocumented 502: ${body.message}`);
  }
  return problems;
}

/** Bytes of a request a careful client would never send: odd request lines, headers, endings. */
export function rawHTTP(t: ProxyTargets): fc.Arbitrary<string> {
  const known = t.sandboxIDs[0] ?? "unknown";
  const ENVD_PORT = t.envdPort ?? t.ports[0]!;
  const line = fc.oneof(
    fc.constantFrom(
      "GET / HTTP/1.1",
      "GET /health HTTP/1.0",
      "GET / HTTP/9.9",
      "GET /",
      "G\u00e9T / HTTP/1.1",
      " / HTTP/1.1",
      "GET  HTTP/1.1",
      "GET /\u0000 HTTP/1.1",
      `GET /${"a".repeat(100_000)} HTTP/1.1`,
      "PRI * HTTP/2.0",
    ),
    oddString({ maxHuge: 20_000 }),
  );
  const header = fc.oneof(
    fc.constantFrom(
      `Host: ${ENVD_PORT}-${known}.${t.domain}`,
      `E2b-Sandbox-Id: ${known}`,
      `E2b-Sandbox-Port: ${ENVD_PORT}`,
      "Host: localhost",
      "Host:",
      "Host: a\u0001b",
      "Transfer-Encoding: chunked",
      "Content-Length: -1",
      "Content-Length: 5",
      "Content-Length: 1, 2",
      `X-Big: ${"b".repeat(70_000)}`,
      "no colon",
      " folded: header",
      "Connection: Upgrade",
      "Upgrade: websocket",
    ),
    oddString({ maxHuge: 3_000 }).map((s) => `X-Fuzz: ${s}`),
  );
  return fc
    .tuple(
      line,
      fc.array(header, { maxLength: 6 }),
      fc.constantFrom("\r\n", "\n", "\r"),
      fc.option(fc.string({ maxLength: 50 }), { freq: 3 }),
    )
    .map(([l, hs, eol, body]) => [l, ...hs].join(eol) + eol + eol + (body ?? ""));
}

/**
 * Writes `bytes` on a fresh connection and answers what came back before the server closed it,
 * or after `waitMs` (half a request may wait for the rest of itself: that alone is no hang).
 */
export function exchangeRaw(port: number, bytes: string, waitMs = 2_000): Promise<string> {
  return new Promise((resolve) => {
    const socket = net.connect(port, "127.0.0.1");
    let data = "";
    const timer = setTimeout(() => {
      socket.destroy();
      resolve(data);
    }, waitMs);
    socket.on("data", (chunk) => {
      data += chunk.toString("latin1");
    });
    socket.on("error", () => undefined);
    socket.on("close", () => {
      clearTimeout(timer);
      resolve(data);
    });
    socket.on("connect", () => socket.write(Buffer.from(bytes, "utf8")));
  });
}

/** Problems with what a server wrote back to raw bytes: an error must be JSON (or HTML), never a 5xx but 502. */
export function rawAnswerProblems(reply: string): string[] {
  const problems: string[] = [];
  const status = /^HTTP\/1\.[01] (\d{3})/.exec(reply);
  if (!status || Number(status[1]) < 400) return problems;
  const code = Number(status[1]);
  const cut = reply.indexOf("\r\n\r\n");
  const head = cut === -1 ? reply : reply.slice(0, cut);
  const body = cut === -1 ? "" : reply.slice(cut + 4);
  if (code >= 500 && code !== 502) problems.push(`server error ${code}`);
  if (!/content-type: application\/json/i.test(head)) {
    problems.push(`error ${code} without a JSON body: ${JSON.stringify(reply.slice(0, 200))}`);
  } else if (!/"message"/.test(body) || !new RegExp(`"code":${code}\\b`).test(body)) {
    problems.push(`error ${code} body: ${body.slice(0, 200)}`);
  }
  return problems;
}
