/**
 * Fuzzing envd inside a real gVisor sandbox of `moat up`, through the client proxy
 * (E2b-Sandbox-Id, E2b-Sandbox-Port: 49983) and acting as `user`: never an envd on the host, where
 * random Remove/Move/MakeDir paths would reach the host's files. Paths stay mostly under a scratch
 * directory, with absolute and odd ones mixed in (inside the sandbox, and as `user`, the damage is
 * contained). Commands come from a harmless list (and names that do not exist).
 *
 * - REST (/files download and upload, /files/compose, /envs, /metrics, /health, /init): no 5xx
 *   but 507 (an upload out of disk, envd's documented answer), errors `{code, message}` with
 *   code = status.
 * - Connect (every method of process.Process and filesystem.Filesystem, JSON and binary codecs,
 *   unary bodies and stream envelopes, bad envelopes, unknown methods, wrong content types, odd
 *   Connect-Timeout-Ms): errors `{code: <connect code>, message}` with the status Connect maps
 *   the code to; never a server fault (unknown, internal, data_loss, unavailable); a deadline
 *   only when one was asked for.
 * - No request hangs, and envd still answers /health and runs a command afterwards.
 *
 * MOAT_FUZZ_SEED replays a run (the failure prints it); MOAT_FUZZ_RUNS scales the runs.
 */
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { gzipSync } from "node:zlib";
import type { DescMethod } from "@bufbuild/protobuf";
import { Sandbox } from "e2b";
import fc from "fast-check";
import { errorBodyProblems } from "../../../packages/api/test/fuzz/check.js";
import { type RawRequest, send } from "../../../packages/api/test/fuzz/http.js";
import { encode, mutated } from "../../../packages/api/test/fuzz/openapi.js";
import { fuzz, runs, watchCrashes } from "../../../packages/api/test/fuzz/run.js";
import { badJSONText, headerValue, oddString } from "../../../packages/api/test/fuzz/strings.js";
import { type RunningMoat, useMoat } from "../helpers/moat-up.js";
import { type CallContext, callsFor, connectAnswerProblems, envelopes, METHODS } from "./connect.js";

const ENVD_PORT = "49983";
const SCRATCH = "/home/user/fuzz";
/** Until an answer begins: past it, the request hangs. */
const DEADLINE_MS = 8_000;
/** A stream still open this long after it began is cut (what came must be well formed). */
const LIVE_STREAM_MS = 2_000;
/** Long-lived processes with these tags give the pid/tag selectors something to find. */
const HELPER_TAGS = ["fuzz-sleep", "fuzz-cat", "fuzz-pty"];
const UINT32_MAX = 4_294_967_295;

const basic = (name: string) => `Basic ${Buffer.from(`${name}:`).toString("base64")}`;

/** Odd absolute and relative paths, harmless to write to even with root's rights. */
const ODD_PATHS = [
  "/",
  "/tmp",
  "/tmp/moatfuzz",
  "/proc",
  "/proc/self",
  "/proc/self/status",
  "/dev/null",
  "/dev/zero",
  "/dev/shm",
  "/dev/shm/moatfuzz",
  "/home/user",
  "/root",
  "/nonexistent/x",
  "~",
  "~/",
  "~root",
  "",
  ".",
  "..",
  "//",
  `${SCRATCH}/${"n".repeat(300)}`,
  `${SCRATCH}/${"d/".repeat(2100)}`,
];
/**
 * System files the permission checks of the filesystem service must keep `user` from. The REST
 * routes do not check the user's permissions yet (they write and compose as root), so they never
 * get these: an overwritten /etc/passwd would leave the sandbox without its `user`.
 */
const SYSTEM_PATHS = ["/etc/passwd", "/etc/shadow", "/etc/group", "/usr/bin/env", "/bin", "/etc"];

/** Paths: mostly under the scratch directory, some relative, some absolute and odd. */
function paths(options: { system: boolean }): fc.Arbitrary<string> {
  return fc.oneof(
    {
      weight: 6,
      arbitrary: fc
        .array(
          fc.oneof(
            fc.constantFrom("a", "b", "dir", "f.txt", ".", "..", "é", "😀", " "),
            oddString({ maxHuge: 300 }),
          ),
          { minLength: 1, maxLength: 4 },
        )
        // ".." segments may climb out of the scratch directory, but the names after them are
        // random: nothing that exists is written over.
        .map((parts) => `${SCRATCH}/${parts.join("/")}`),
    },
    { weight: 1, arbitrary: fc.constant(SCRATCH) },
    { weight: 1, arbitrary: fc.constantFrom("fuzz/a", "fuzz/../fuzz/b", "~/fuzz/c", "~/fuzz") },
    { weight: 2, arbitrary: fc.constantFrom(...ODD_PATHS, ...(options.system ? SYSTEM_PATHS : [])) },
    {
      weight: 1,
      // Random text is a relative path (under the home directory) or names nothing that exists.
      arbitrary: oddString({ maxHuge: 10_000 }).map((s) => (s.startsWith("/") ? `/nonexistent${s}` : s)),
    },
  );
}
/** For the filesystem service, which holds `user` to its permissions. */
const pathArb = paths({ system: true });
/** For the REST routes, which do not yet. */
const restPathArb = paths({ system: false });

/** Commands that end by themselves and touch nothing, and names that do not exist. */
const cmdArb = fc.oneof(
  {
    weight: 4,
    arbitrary: fc.constantFrom(
      "/bin/echo",
      "echo",
      "true",
      "/bin/false",
      "printf",
      "pwd",
      "id",
      "/bin/sh",
      "sh",
    ),
  },
  { weight: 1, arbitrary: oddString({ maxHuge: 5_000 }).map((s) => `/nonexistent-moatfuzz/${s}`) },
  { weight: 1, arbitrary: fc.constantFrom("", " ", ".", "..", "/", "~", "a\u0000b", "/dev/null", "/tmp") },
);

const SCRIPTS = [
  "exit 3",
  "echo $HOME; pwd",
  "printf '\\0\\377'",
  "sleep 0.2",
  "echo err >&2; exit 1",
  "kill -9 $$",
  "yes | head -c 100000",
  "exec 1>&-; echo x",
];

const argsArb = fc.oneof(
  fc.array(oddString({ maxHuge: 5_000 }), { maxLength: 4 }),
  fc.constantFrom(...SCRIPTS).map((script) => ["-c", script]),
);

function hints(pids: number[]): CallContext["hints"] {
  return {
    path: pathArb,
    source: pathArb,
    destination: pathArb,
    cwd: pathArb,
    cmd: cmdArb,
    args: argsArb,
    pid: fc.oneof(
      fc.constantFrom(...(pids.length ? pids : [1])),
      fc.constantFrom(0, 1, UINT32_MAX),
      fc.nat(),
    ),
    tag: fc.oneof(fc.constantFrom(...HELPER_TAGS), oddString({ maxHuge: 2_000 })),
    watcher_id: fc.oneof(fc.constant("KNOWN_WATCHER"), oddString({ maxHuge: 2_000 })),
    depth: fc.constantFrom(0, 1, 2, 3, 5, 100, UINT32_MAX),
    cols: fc.constantFrom(0, 1, 80, 65_535, 65_536, UINT32_MAX),
    rows: fc.constantFrom(0, 1, 24, 65_535, 65_536, UINT32_MAX),
    stdin: fc.constantFrom(false, false, true),
  };
}

interface RestCall {
  request: RawRequest;
  how: string[];
}

function multipart(parts: { name: string; filename?: string; body: Uint8Array }[], boundary: string): Buffer {
  const chunks: Buffer[] = [];
  for (const part of parts) {
    const filename = part.filename === undefined ? "" : `; filename="${part.filename}"`;
    chunks.push(
      Buffer.from(`--${boundary}\r\nContent-Disposition: form-data; name="${part.name}"${filename}\r\n\r\n`),
      Buffer.from(part.body),
      Buffer.from("\r\n"),
    );
  }
  chunks.push(Buffer.from(`--${boundary}--\r\n`));
  return Buffer.concat(chunks);
}

function restCalls(base: Record<string, string>, token: string): fc.Arbitrary<RestCall> {
  const auth = fc.oneof(
    { weight: 8, arbitrary: fc.constant({ headers: {}, how: "" }) },
    {
      weight: 1,
      arbitrary: fc.oneof(
        fc.constant({ headers: { "X-Access-Token": "" }, how: "empty token" }),
        headerValue().map((v) => ({ headers: { "X-Access-Token": v }, how: "odd token" })),
        fc.constant({ headers: { "X-Access-Token": `${token}x` }, how: "near-miss token" }),
        headerValue().map((v) => ({ headers: { Authorization: v }, how: "odd Authorization" })),
        fc
          .constantFrom("nobody", "nosuchuser", "", ":", "user:pw")
          .map((u) => ({ headers: { Authorization: basic(u) }, how: `user '${u}'` })),
      ),
    },
  );
  const username = fc.option(
    fc.oneof(fc.constantFrom("user", "", "nobody", "nosuchuser"), oddString({ maxHuge: 2_000 })),
    { freq: 3 },
  );
  const query = (pairs: [string, string | null][]) =>
    pairs
      .filter(([, v]) => v !== null)
      .map(([k, v]) => `${k}=${encode(v!)}`)
      .join("&");
  const fileBody = fc.oneof(
    fc.uint8Array({ maxLength: 2_000 }),
    fc.constant(new Uint8Array(300_000).fill(0x61)),
  );
  const download = fc
    .tuple(
      fc.constantFrom("GET", "HEAD"),
      restPathArb,
      username,
      fc.option(
        fc.oneof(
          headerValue(),
          fc.constantFrom(
            "bytes=0-0",
            "bytes=-1",
            "bytes=5-",
            "bytes=0-1,3-4",
            "bytes=99999999999999999999-",
            "bytes=-0",
          ),
        ),
        { freq: 3 },
      ),
      fc.option(
        fc.oneof(headerValue(), fc.constantFrom("gzip", "br", "gzip;q=0, identity;q=0", "*;q=0", "identity")),
        { freq: 3 },
      ),
      fc.option(
        fc.tuple(
          fc.constantFrom(
            "If-None-Match",
            "If-Match",
            "If-Modified-Since",
            "If-Unmodified-Since",
            "If-Range",
          ),
          headerValue(),
        ),
        { freq: 3 },
      ),
      fc.option(fc.tuple(headerValue(), fc.constantFrom("-1", "0", "99999999999", "abc", "1e3")), {
        freq: 6,
      }),
    )
    .map(([method, path, user, range, encoding, conditional, signature]) => {
      const headers: Record<string, string> = {};
      if (range !== null) headers.Range = range;
      if (encoding !== null) headers["Accept-Encoding"] = encoding;
      if (conditional !== null) headers[conditional[0]] = conditional[1];
      const q = query([
        ["path", path],
        ["username", user],
        ["signature", signature?.[0] ?? null],
        ["signature_expiration", signature?.[1] ?? null],
      ]);
      return { request: { method, target: `/files?${q}`, headers }, how: ["download"] };
    });
  const uploadRaw = fc
    .tuple(
      restPathArb,
      username,
      fileBody,
      fc.constantFrom("plain", "gzip", "corrupt gzip", "br"),
      fc.option(
        fc.dictionary(
          headerValue().map((k) => k.replace(/[^A-Za-z0-9-]/g, "") || "k"),
          headerValue(),
          { maxKeys: 3 },
        ),
        { freq: 3 },
      ),
    )
    .map(([path, user, body, encoding, metadata]) => {
      const headers: Record<string, string> = { "Content-Type": "application/octet-stream" };
      let payload = Buffer.from(body);
      if (encoding === "gzip") payload = gzipSync(payload);
      if (encoding === "corrupt gzip")
        payload = Buffer.concat([gzipSync(payload).subarray(0, 12), Buffer.from("garbage")]);
      if (encoding !== "plain") headers["Content-Encoding"] = encoding === "corrupt gzip" ? "gzip" : encoding;
      for (const [k, v] of Object.entries(metadata ?? {})) headers[`X-Metadata-${k}`] = v;
      return {
        request: {
          method: "POST",
          target: `/files?${query([
            ["path", path],
            ["username", user],
          ])}`,
          headers,
          body: payload,
        },
        how: [`raw upload (${encoding})`],
      };
    });
  const uploadMultipart = fc
    .tuple(
      fc.array(
        fc.record({
          name: fc.constantFrom("file", "file", "other", ""),
          filename: fc.option(restPathArb, { nil: undefined, freq: 6 }),
          body: fc.uint8Array({ maxLength: 1_000 }),
        }),
        { maxLength: 3 },
      ),
      fc.option(restPathArb, { freq: 2 }),
      fc.constantFrom("ok", "no boundary", "wrong boundary", "truncated", "no content type"),
    )
    .map(([parts, path, shape]) => {
      const boundary = "moatfuzzBoundary";
      let body = multipart(parts, boundary);
      const headers: Record<string, string> = { "Content-Type": `multipart/form-data; boundary=${boundary}` };
      if (shape === "no boundary") headers["Content-Type"] = "multipart/form-data";
      if (shape === "wrong boundary") headers["Content-Type"] = "multipart/form-data; boundary=other";
      if (shape === "truncated") body = body.subarray(0, Math.floor(body.length / 2));
      if (shape === "no content type") delete headers["Content-Type"];
      return {
        request: {
          method: "POST",
          target: `/files${path === null ? "" : `?${query([["path", path]])}`}`,
          headers,
          body,
        },
        how: [`multipart upload (${shape})`],
      };
    });
  const composeValid = fc.record(
    {
      source_paths: fc.array(restPathArb, { maxLength: 4 }),
      destination: restPathArb,
      username: fc.constantFrom("user", "nobody", "nosuchuser", ""),
    },
    { requiredKeys: ["source_paths", "destination"] },
  );
  const compose = fc
    .oneof(
      composeValid.map((v) => ({ text: JSON.stringify(v), how: "" })),
      mutated(composeValid).map(({ value, how }) => ({ text: JSON.stringify(value), how })),
      badJSONText.map((text) => ({ text, how: "bad JSON" })),
    )
    .map(({ text, how }) => ({
      request: {
        method: "POST",
        target: "/files/compose",
        headers: { "Content-Type": "application/json" },
        body: text,
      },
      how: ["compose", how],
    }));
  const others = fc
    .tuple(
      fc.constantFrom("GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD"),
      fc.constantFrom(
        "/envs",
        "/metrics",
        "/health",
        "/init",
        "/freeze",
        "/files",
        "/files/compose",
        "/",
        "/nope",
        "/files/",
        "/%2e%2e/init",
        "/INIT",
      ),
      fc.option(oddString({ maxHuge: 3_000 }), { freq: 3 }),
      fc.option(badJSONText, { freq: 3 }),
    )
    .map(([method, path, junk, body]) => ({
      request: {
        method,
        target: junk === null ? path : `${path}?${encode(junk)}=${encode(junk)}`,
        headers:
          body === null || method === "GET" || method === "HEAD"
            ? {}
            : { "Content-Type": "application/json" },
        body: body === null || method === "GET" || method === "HEAD" ? undefined : body,
      },
      how: ["other route"],
    }));
  return fc.tuple(fc.oneof(download, uploadRaw, uploadMultipart, compose, others), auth).map(([call, a]) => ({
    request: { ...call.request, headers: { ...base, ...call.request.headers, ...a.headers } },
    how: [...call.how, a.how].filter((h) => h !== ""),
  }));
}

/** Defines the suite; `up` answers the `moat up` the entry file started. */
export function envdFuzzSuite(up: () => RunningMoat): void {
  describe("envd fuzzing inside a gVisor sandbox, through the client proxy", () => {
    let moat: RunningMoat;
    let proxyPort: number;
    let sandboxID: string;
    let token: string;
    let base: Record<string, string>;
    let sbx: Sandbox;
    const crashes = watchCrashes();

    const rpc = (method: string, body: unknown, extra: Record<string, string> = {}) =>
      send(
        proxyPort,
        {
          method: "POST",
          target: `/${method}`,
          headers: { ...base, "Content-Type": "application/json", "Connect-Protocol-Version": "1", ...extra },
          body: JSON.stringify(body),
        },
        DEADLINE_MS,
      );

    /** Starts a process through Start and leaves it running; answers its pid. */
    async function startHelper(tag: string, cmd: string, args: string[], pty: boolean): Promise<number> {
      const payload = Buffer.from(
        JSON.stringify({
          process: { cmd, args, cwd: SCRATCH },
          tag,
          stdin: true,
          ...(pty ? { pty: { size: { cols: 80, rows: 24 } } } : {}),
        }),
      );
      const head = Buffer.alloc(5);
      head.writeUInt32BE(payload.length, 1);
      const answer = await send(
        proxyPort,
        {
          method: "POST",
          target: "/process.Process/Start",
          headers: { ...base, "Content-Type": "application/connect+json", "Connect-Protocol-Version": "1" },
          body: Buffer.concat([head, payload]),
        },
        DEADLINE_MS,
        { liveMs: 500 },
      );
      const frames = envelopes(answer.body);
      assert.ok(
        typeof frames !== "string" && frames.length > 0,
        `helper ${tag} did not start: ${answer.text}`,
      );
      const first = JSON.parse(frames[0]!.data.toString()) as { event: { start: { pid: number } } };
      return first.event.start.pid;
    }

    /** (Re)starts the helper processes that are gone and answers every helper pid. */
    async function helpers(): Promise<number[]> {
      const listed = await rpc("process.Process/List", {});
      const running =
        (JSON.parse(listed.text) as { processes?: { pid: number; tag?: string }[] }).processes ?? [];
      const pids: number[] = [];
      for (const [tag, cmd, args, pty] of [
        ["fuzz-sleep", "sleep", ["600"], false],
        ["fuzz-cat", "cat", [], false],
        ["fuzz-pty", "cat", [], true],
      ] as const) {
        const found = running.find((p) => p.tag === tag);
        pids.push(found ? found.pid : await startHelper(tag, cmd, [...args], pty));
      }
      return pids;
    }

    /** envd answers /health through the proxy. */
    async function healthy(): Promise<string[]> {
      const health = await send(proxyPort, { method: "GET", target: "/health", headers: base }, DEADLINE_MS);
      return health.status === 204
        ? []
        : [`/health answered ${health.status} afterwards: ${health.text.slice(0, 200)}`];
    }

    /** Kills every process the fuzzing started (the helpers are started again when needed). */
    async function killAll(): Promise<void> {
      const listed = await rpc("process.Process/List", {});
      const running = (JSON.parse(listed.text) as { processes?: { pid: number }[] }).processes ?? [];
      for (const p of running)
        await rpc("process.Process/SendSignal", { process: { pid: p.pid }, signal: "SIGNAL_SIGKILL" });
    }

    /** The SDK still works: a command runs, a file round-trips. */
    async function stillWorks(): Promise<void> {
      const out = await sbx.commands.run("echo still-here", { timeoutMs: 20_000 });
      assert.equal(out.stdout, "still-here\n");
      await sbx.files.write(`${SCRATCH}/canary`, "canary");
      assert.equal(await sbx.files.read(`${SCRATCH}/canary`), "canary");
    }

    before(async () => {
      moat = up();
      useMoat(moat);
      proxyPort = Number(new URL(moat.env.E2B_SANDBOX_URL!).port);
      const created = await fetch(`${moat.env.E2B_API_URL}/v2/sandboxes`, {
        method: "POST",
        headers: { "X-API-Key": moat.env.E2B_API_KEY!, "Content-Type": "application/json" },
        body: JSON.stringify({ templateID: "base", timeout: 900 }),
      });
      const info = (await created.json()) as { sandboxID: string; envdAccessToken: string };
      assert.equal(created.status, 201, JSON.stringify(info));
      sandboxID = info.sandboxID;
      token = info.envdAccessToken;
      assert.ok(token, "v2 creates are secured: envd has an access token");
      base = {
        "E2b-Sandbox-Id": sandboxID,
        "E2b-Sandbox-Port": ENVD_PORT,
        "X-Access-Token": token,
        // Always `user`: as root, random Remove/Move paths could break the sandbox's own system.
        Authorization: basic("user"),
      };
      sbx = await Sandbox.connect(sandboxID);
      await sbx.files.makeDir(SCRATCH);
    });

    after(async () => {
      crashes.stop();
      await fetch(`${moat.env.E2B_API_URL}/sandboxes/${sandboxID}`, {
        method: "DELETE",
        headers: { "X-API-Key": moat.env.E2B_API_KEY! },
      });
    });

    test("REST routes: downloads, uploads, compose, envs, metrics, health, init", async () => {
      await fuzz(
        "envd REST",
        fc.asyncProperty(restCalls(base, token), async (call) => {
          const answer = await send(proxyPort, call.request, DEADLINE_MS);
          const problems: string[] = [];
          // 507: an upload out of disk space, envd's documented answer; every other 5xx is a fault.
          if (answer.status >= 500 && answer.status !== 507) problems.push(`server error ${answer.status}`);
          if (answer.status >= 400 && call.request.method !== "HEAD") {
            // The proxy's refusal of /init and the like names the path and the request's id too.
            problems.push(
              ...errorBodyProblems(answer, (b) => b.code === answer.status, ["path", "requestId"]),
            );
          }
          problems.push(...(await healthy()), ...crashes.take());
          assert.deepEqual(
            problems,
            [],
            `${call.request.method} ${call.request.target.slice(0, 300)} (${call.how.join(", ")}) → ${answer.status} ${answer.text.slice(0, 300)}`,
          );
        }),
        { numRuns: runs(1) },
      );
      await stillWorks();
    });

    test("Connect routes: every method, both codecs, good and bad framing", async () => {
      const pids = await helpers();
      const ctx: CallContext = { base, hints: hints(pids) };
      const watcher = await rpc("filesystem.Filesystem/CreateWatcher", { path: SCRATCH });
      const watcherID = (JSON.parse(watcher.text) as { watcherId: string }).watcherId;
      const byMethod = fc.oneof(...METHODS.map((m: DescMethod) => callsFor(m, ctx)));
      await fuzz(
        "envd Connect",
        fc.asyncProperty(byMethod, async (call) => {
          const body =
            call.request.body === undefined
              ? undefined
              : Buffer.from(call.request.body).toString("latin1").replaceAll("KNOWN_WATCHER", watcherID);
          const request = {
            ...call.request,
            body: body === undefined ? undefined : Buffer.from(body, "latin1"),
          };
          // A stream still open 2 s after it began (a watch, a terminal) is cut there.
          const live = call.method.methodKind === "unary" ? {} : { liveMs: LIVE_STREAM_MS };
          const answer = await send(proxyPort, request, DEADLINE_MS, live);
          const problems = connectAnswerProblems(answer, call, answer.cut);
          problems.push(...(await healthy()), ...crashes.take());
          assert.deepEqual(
            problems,
            [],
            `${call.request.method} ${call.request.target} ${call.codec} (${call.how.join(", ") || "valid-looking"}) ${body?.slice(0, 300)} → ${answer.status}${answer.cut ? " (cut)" : ""} ${answer.text.slice(0, 300)}`,
          );
        }),
        { numRuns: runs(2) },
      );
      await killAll();
      await stillWorks();
    });

    test("a deadline a client asks for is the one it gets", async () => {
      // Any valid Connect-Timeout-Ms of 10 s or more lets a quick command finish normally.
      const timeouts = fc.oneof(
        fc.integer({ min: 10_000, max: 9_999_999_999 }),
        fc.constantFrom(2_147_483_647, 2_147_483_648, 9_999_999_999),
      );
      await fuzz(
        "envd deadlines",
        fc.asyncProperty(timeouts, async (timeoutMs) => {
          const payload = Buffer.from(
            JSON.stringify({
              process: { cmd: "/bin/sh", args: ["-c", "sleep 0.1; echo done"] },
              stdin: false,
            }),
          );
          const head = Buffer.alloc(5);
          head.writeUInt32BE(payload.length, 1);
          const answer = await send(
            proxyPort,
            {
              method: "POST",
              target: "/process.Process/Start",
              headers: {
                ...base,
                "Content-Type": "application/connect+json",
                "Connect-Protocol-Version": "1",
                "Connect-Timeout-Ms": String(timeoutMs),
              },
              body: Buffer.concat([head, payload]),
            },
            DEADLINE_MS,
          );
          const frames = envelopes(answer.body);
          assert.ok(typeof frames !== "string", `stream: ${frames}`);
          const events = frames.map((f) => JSON.parse(f.data.toString()) as Record<string, unknown>);
          const trailer = events.at(-1)!;
          const end = events.find((e) => (e.event as Record<string, unknown> | undefined)?.end) as
            | { event: { end: { exitCode?: number; status?: string } } }
            | undefined;
          const valid = timeoutMs <= 2_147_483_647;
          if (valid) {
            assert.equal(trailer.error, undefined, `Connect-Timeout-Ms ${timeoutMs}: ${answer.text}`);
            assert.equal(end?.event.end.exitCode ?? 0, 0, `Connect-Timeout-Ms ${timeoutMs}: ${answer.text}`);
          } else {
            // Longer than a timer can hold: refused as invalid, never silently shortened to nothing.
            assert.equal(
              (trailer.error as { code?: string } | undefined)?.code,
              "invalid_argument",
              `Connect-Timeout-Ms ${timeoutMs}: ${answer.text}`,
            );
          }
        }),
        { numRuns: runs(0.1) },
      );
    });

    test("envd still answers /health and runs commands after the fuzzing", async () => {
      assert.deepEqual(await healthy(), []);
      await stillWorks();
      assert.deepEqual(crashes.take(), []);
      assert.doesNotMatch(moat.log(), /unhandled|uncaught/i, "no error escaped in moat's own process");
    });
  });
}
