/**
 * `moat status | teams | keys | sandboxes` in this process: against a real API on loopback (no
 * nodes) for teams, keys and status, and against a small fake API for what needs sandboxes (their
 * logs, followed). Also where credentials come from: a moat up data directory's secrets go only
 * to that moat's API.
 */
import assert from "node:assert/strict";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import http from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import { type RunningAPI, startAPI } from "@moat/api";
import { createNoopLogger } from "@moat/shared";
import type { Command } from "commander";
import type { CommandIO } from "../src/admin/client.js";
import { safeJSON, safeText } from "../src/admin/output.js";
import { keysCommand } from "../src/commands/keys.js";
import { LogTail, sandboxesCommand } from "../src/commands/sandboxes.js";
import { statusCommand } from "../src/commands/status.js";
import { teamsCommand } from "../src/commands/teams.js";

const ADMIN_TOKEN = "admin-token-for-the-cli-tests-0123";
/** A control character a terminal would act on (tab and newline aside). */
// biome-ignore lint/suspicious/noControlCharactersInRegex: what the output must not hold.
const CONTROL = /[\u0000-\u0008\u000b-\u001f\u007f-\u009f]/;

class Exit extends Error {
  constructor(readonly code: number) {
    super(`exit ${code}`);
  }
}

const COMMANDS: Record<string, (io: CommandIO) => Command> = {
  status: statusCommand,
  teams: teamsCommand,
  keys: keysCommand,
  sandboxes: sandboxesCommand,
};

/** Runs `moat <args>` in this process with only `env` of the moat variables set. */
async function moat(args: string[], env: Record<string, string> = {}, { polls = Infinity } = {}) {
  const saved = { ...process.env };
  for (const name of [
    "MOAT_ADMIN_TOKEN",
    "MOAT_API_URL",
    "E2B_API_KEY",
    "E2B_SANDBOX_URL",
    "MOAT_DATA_DIR",
  ]) {
    delete process.env[name];
  }
  Object.assign(process.env, { MOAT_DATA_DIR: "/nonexistent-moat-cli-test" }, env);
  const out: string[] = [];
  const err: string[] = [];
  let slept = 0;
  const io: CommandIO = {
    out: (text) => void out.push(text),
    err: (text) => void err.push(text),
    exit: (code): never => {
      throw new Exit(code);
    },
    isTTY: false,
    sleep: async () => ++slept <= polls,
  };
  let code = 0;
  try {
    const [name, ...rest] = args;
    const cmd = COMMANDS[name!]!(io);
    cmd.exitOverride();
    await cmd.parseAsync(rest, { from: "user" });
  } catch (e) {
    if (!(e instanceof Exit)) throw e;
    code = e.code;
  } finally {
    process.env = saved;
  }
  return { code, stdout: out.join(""), stderr: err.join("") };
}

/** A fake API: answers `routes` by path, records every request's headers. */
async function fakeAPI(routes: Record<string, (url: URL) => { status: number; body: unknown }>) {
  const seen: Array<{ path: string; headers: http.IncomingHttpHeaders }> = [];
  const server = http.createServer((req, res) => {
    const url = new URL(req.url ?? "/", "http://x");
    seen.push({ path: url.pathname, headers: req.headers });
    const route = routes[url.pathname];
    const answer = route
      ? route(url)
      : { status: 404, body: { code: 404, message: `no route for GET ${url.pathname}` } };
    res.writeHead(answer.status, { "Content-Type": "application/json" });
    res.end(JSON.stringify(answer.body));
  });
  server.listen(0, "127.0.0.1");
  await new Promise((r) => server.once("listening", r));
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  return { url, seen, close: () => new Promise<void>((r) => server.close(() => r())) };
}

describe("moat teams, keys and status against a real API", () => {
  let api: RunningAPI;
  let dataDir: string;
  let defaultKey: string;
  const admin = () => ({ MOAT_API_URL: api.url, MOAT_ADMIN_TOKEN: ADMIN_TOKEN });

  before(async () => {
    dataDir = await mkdtemp(path.join(tmpdir(), "moat-cli-admin-"));
    api = await startAPI({
      dataDir,
      databaseURL: "memory://",
      host: "127.0.0.1",
      port: 0,
      orchestrators: [],
      nodeToken: "node-token-for-the-cli-tests-0123456789abcdef",
      adminToken: ADMIN_TOKEN,
      logger: createNoopLogger(),
      watchNodes: false,
    });
    defaultKey = (await api.bootstrap()).apiKey!;
  });
  after(async () => {
    await api.close();
    await rm(dataDir, { recursive: true, force: true });
  });

  test("teams create prints the key once; teams list shows the team, never a key", async () => {
    const created = await moat(["teams", "create", "acme", "--json"], admin());
    assert.equal(created.code, 0, created.stderr);
    const team = JSON.parse(created.stdout) as { teamID: string; apiKey: string };
    assert.match(team.apiKey, /^e2b_/);
    const list = await moat(["teams", "list"], admin());
    assert.equal(list.code, 0, list.stderr);
    assert.match(list.stdout, /^ID\s+NAME\s+KEYS/);
    assert.match(list.stdout, new RegExp(`${team.teamID}\\s+acme\\s+1\\s+0\\s+0`));
    assert.match(list.stdout, /default \(default\)/);
    assert.equal(list.stdout.includes(team.apiKey), false);
    const json = JSON.parse((await moat(["teams", "list", "--json"], admin())).stdout) as unknown[];
    assert.equal(json.length, 2);
  });

  test("keys as a team (API key) and as the operator (--team); revoked keys stop working", async () => {
    const created = await moat(["keys", "create", "ci", "--json"], {
      MOAT_API_URL: api.url,
      E2B_API_KEY: defaultKey,
    });
    assert.equal(created.code, 0, created.stderr);
    const key = JSON.parse(created.stdout) as { id: string; key: string };
    const list = await moat(["keys", "list"], { MOAT_API_URL: api.url, E2B_API_KEY: key.key });
    assert.match(
      list.stdout,
      new RegExp(`${key.id}\\s+ci\\s+e2b_${key.key.slice(4, 6)}…${key.key.slice(-4)}`),
    );
    assert.equal(list.stdout.includes(key.key), false);
    // As the operator, on the default team (no --team, no API key).
    const asAdmin = await moat(["keys", "list", "--json"], admin());
    assert.equal((JSON.parse(asAdmin.stdout) as unknown[]).length, 2);
    const revoked = await moat(["keys", "revoke", key.id], {
      MOAT_API_URL: api.url,
      E2B_API_KEY: defaultKey,
    });
    assert.equal(revoked.code, 0, revoked.stderr);
    assert.equal((await fetch(`${api.url}/v2/sandboxes`, { headers: { "X-API-Key": key.key } })).status, 401);
    // The team's last key: refused as the team, with what to do; the operator may.
    const [{ id: lastID }] = JSON.parse((await moat(["keys", "list", "--json"], admin())).stdout) as Array<{
      id: string;
    }>;
    const refused = await moat(["keys", "revoke", lastID!], {
      MOAT_API_URL: api.url,
      E2B_API_KEY: defaultKey,
    });
    assert.equal(refused.code, 1);
    assert.match(refused.stderr, /409: .*last key: create another one first/);
    const teams = JSON.parse((await moat(["teams", "list", "--json"], admin())).stdout) as Array<{
      teamID: string;
      isDefault: boolean;
    }>;
    const other = teams.find((t) => !t.isDefault)!;
    const forOther = await moat(["keys", "create", "ops", "--team", other.teamID, "--json"], admin());
    assert.equal(forOther.code, 0, forOther.stderr);
    const wrongToken = await moat(["keys", "list", "--team", other.teamID], {
      ...admin(),
      MOAT_ADMIN_TOKEN: "wrong",
    });
    assert.equal(wrongToken.code, 1);
    assert.match(wrongToken.stderr, /401.*check MOAT_ADMIN_TOKEN/);
  });

  test("status: the API up, its nodes and sandboxes; --json for scripts", async () => {
    const res = await moat(["status"], admin());
    assert.equal(res.code, 0, res.stderr);
    assert.match(res.stdout, /api\s+http:\/\/127\.0\.0\.1:\d+\s+up/);
    assert.match(res.stdout, /sandboxes: none/);
    assert.match(res.stdout, /teams: 2/);
    const json = JSON.parse((await moat(["status", "--json"], admin())).stdout) as {
      api: { up: boolean };
      overview: { teams: number };
    };
    assert.equal(json.api.up, true);
    const noToken = await moat(["status"], { MOAT_API_URL: api.url });
    assert.equal(noToken.code, 1);
    assert.match(noToken.stderr, /no admin token: set MOAT_ADMIN_TOKEN/);
  });

  test("an API that is not there: said, with what to do", async () => {
    const res = await moat(["teams", "list"], {
      MOAT_API_URL: "http://127.0.0.1:9",
      MOAT_ADMIN_TOKEN: ADMIN_TOKEN,
    });
    assert.equal(res.code, 1);
    assert.match(res.stderr, /cannot reach the API at http:\/\/127\.0\.0\.1:9 .*is moat up running/);
  });
});

describe("credentials from moat up's data directory", () => {
  let dir: string;
  before(async () => {
    dir = await mkdtemp(path.join(tmpdir(), "moat-cli-env-"));
  });
  after(() => rm(dir, { recursive: true, force: true }));

  test("its admin token and key go to its own API, never to another --api-url", async () => {
    const own = await fakeAPI({ "/admin/teams": () => ({ status: 200, body: [] }) });
    const other = await fakeAPI({ "/admin/teams": () => ({ status: 200, body: [] }) });
    try {
      await writeFile(
        path.join(dir, ".env"),
        `E2B_API_KEY=e2b_${"a".repeat(40)}\nE2B_API_URL=${own.url}\nMOAT_ADMIN_TOKEN=${ADMIN_TOKEN}\n`,
      );
      const ok = await moat(["teams", "list", "--data-dir", dir]);
      assert.equal(ok.code, 0, ok.stderr);
      assert.equal(own.seen[0]?.headers["x-admin-token"], ADMIN_TOKEN);
      const elsewhere = await moat(["teams", "list", "--data-dir", dir, "--api-url", other.url]);
      assert.equal(elsewhere.code, 1);
      assert.match(elsewhere.stderr, /no admin token/);
      const keys = await moat(["sandboxes", "list", "--data-dir", dir, "--api-url", other.url]);
      assert.match(keys.stderr, /no API key/);
      assert.equal(other.seen.length, 0, "nothing was sent to the other API");
    } finally {
      await own.close();
      await other.close();
    }
  });
});

describe("moat sandboxes logs", () => {
  const entry = (ms: number, message: string, level = "info") => ({
    timestamp: new Date(ms).toISOString(),
    level,
    message,
    fields: { source: "start-cmd" },
  });

  test("what a sandbox printed reaches the terminal with its control sequences escaped", async () => {
    const hostile = "\u001b]0;owned\u0007\u001b[2Jrm -rf /\u009b31m";
    const api = await fakeAPI({
      "/v2/sandboxes/sbx1/logs": () => ({ status: 200, body: { logs: [entry(1_700_000_000_000, hostile)] } }),
    });
    try {
      const res = await moat(["sandboxes", "logs", "sbx1", "--api-url", api.url, "--api-key", "k"]);
      assert.equal(res.code, 0, res.stderr);
      assert.equal(CONTROL.test(res.stdout), false, JSON.stringify(res.stdout));
      assert.match(res.stdout, /INFO {2}\[start-cmd\] \\x1b\]0;owned\\x07\\x1b\[2Jrm -rf \/\\x9b31m/);
      const json = await moat([
        "sandboxes",
        "logs",
        "sbx1",
        "--api-url",
        api.url,
        "--api-key",
        "k",
        "--json",
      ]);
      assert.equal(CONTROL.test(json.stdout), false);
      assert.equal((JSON.parse(json.stdout) as { message: string }).message, hostile);
      assert.equal(api.seen[0]?.headers["x-api-key"], "k");
    } finally {
      await api.close();
    }
  });

  test("--follow prints each entry once, asking from the last one's millisecond on", async () => {
    const t0 = 1_700_000_000_000;
    const log = [entry(t0, "one"), entry(t0 + 5, "two")];
    const cursors: Array<string | null> = [];
    const api = await fakeAPI({
      "/v2/sandboxes/sbx1/logs": (url) => {
        cursors.push(url.searchParams.get("cursor"));
        const cursor = Number(url.searchParams.get("cursor") ?? 0);
        const page = log.filter((e) => Date.parse(e.timestamp) >= cursor);
        // The log grows between polls, also within the last millisecond seen.
        if (cursors.length === 2) log.push(entry(t0 + 5, "two-bis"), entry(t0 + 9, "three", "error"));
        return { status: 200, body: { logs: page } };
      },
    });
    try {
      const res = await moat(
        ["sandboxes", "logs", "sbx1", "-f", "--api-url", api.url, "--api-key", "k"],
        {},
        { polls: 3 },
      );
      assert.equal(res.code, 0, res.stderr);
      const messages = res.stdout
        .trim()
        .split("\n")
        .map((l) => l.split("] ")[1]);
      assert.deepEqual(messages, ["one", "two", "two-bis", "three"]);
      assert.deepEqual(cursors, [null, String(t0 + 5), String(t0 + 5), String(t0 + 9)]);
    } finally {
      await api.close();
    }
  });

  test("an API without the v2 route: the v1 route's entries, filtered by level and text", async () => {
    const api = await fakeAPI({
      "/sandboxes/sbx1/logs": () => ({
        status: 200,
        body: {
          logs: [],
          logEntries: [entry(1, "debug line", "debug"), entry(2, "boom", "error"), entry(3, "ok")],
        },
      }),
    });
    try {
      const res = await moat([
        "sandboxes",
        "logs",
        "sbx1",
        "--level",
        "info",
        "--api-url",
        api.url,
        "--api-key",
        "k",
      ]);
      assert.equal(res.code, 0, res.stderr);
      assert.deepEqual(
        res.stdout
          .trim()
          .split("\n")
          .map((l) => l.split("] ")[1]),
        ["boom", "ok"],
      );
      const missing = await moat(["sandboxes", "logs", "nope", "--api-url", api.url, "--api-key", "k"]);
      assert.equal(missing.code, 1);
    } finally {
      await api.close();
    }
  });

  test("LogTail and the escaping helpers", () => {
    const tail = new LogTail([entry(10, "a"), entry(10, "b")]);
    assert.equal(tail.cursor, 10);
    assert.deepEqual(
      tail.fresh([entry(10, "a"), entry(10, "b"), entry(10, "c"), entry(11, "d")]).map((e) => e.message),
      ["c", "d"],
    );
    assert.equal(safeText("a\tb\nc", { cell: true }), "a\\tb\\nc");
    assert.equal(safeJSON("\u0085"), '"\\u0085"');
  });
});
