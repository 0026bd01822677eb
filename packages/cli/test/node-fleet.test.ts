/**
 * A node's heartbeat against a real API over loopback (registration, what it reports, failures
 * logged once per change), and `moat node list | drain | ready` against the same API.
 */
import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import { type RunningAPI, startAPI } from "@moat/api";
import { Heartbeat, LoadSampler } from "@moat/orchestrator";
import { createNoopLogger, type Logger } from "@moat/shared";
import { nodeCommand } from "../src/commands/node.js";

const NODE_TOKEN = "node-token-for-the-cli-tests-0123456789abcdef";
const ADMIN_TOKEN = "admin-token-for-the-cli-tests-0123";

/** A logger that counts warnings and infos. */
function countingLogger(): Logger & { warns: string[]; infos: string[] } {
  const base = createNoopLogger();
  const warns: string[] = [];
  const infos: string[] = [];
  return Object.assign(Object.create(base), {
    warns,
    infos,
    warn: (_obj: unknown, msg?: string) => warns.push(String(msg)),
    info: (_obj: unknown, msg?: string) => infos.push(String(msg)),
  });
}

function heartbeat(apiURL: string, token: string, logger: Logger): Heartbeat {
  return new Heartbeat({
    apiURL,
    nodeID: "n1",
    token,
    rpcURL: "http://127.0.0.1:5008",
    proxyURL: "http://127.0.0.1:5007",
    version: "0.1.0",
    runtime: "runsc 0.0~20240729.0",
    labels: ["build"],
    sampler: new LoadSampler(),
    counts: () => ({ sandboxes: 3, starting: 1, poolReady: 2 }),
    builds: () => ["b1", "b2"],
    logger,
  });
}

/** Runs `moat node …` in this process: its output, and its exit code. */
async function moat(args: string[], env: Record<string, string | undefined>) {
  const saved = { ...process.env };
  const out: string[] = [];
  const err: string[] = [];
  delete process.env.MOAT_ADMIN_TOKEN;
  delete process.env.MOAT_API_URL;
  Object.assign(process.env, env);
  const io = {
    out: (text: string) => void out.push(text),
    err: (text: string) => void err.push(text),
    exit: (code: number): never => {
      throw new Exit(code);
    },
  };
  let code = 0;
  try {
    await nodeCommand(io).parseAsync(args.slice(1), { from: "user" });
  } catch (e) {
    if (!(e instanceof Exit)) throw e;
    code = e.code;
  } finally {
    process.env = saved;
  }
  return { code, stdout: out.join(""), stderr: err.join("") };
}

class Exit extends Error {
  constructor(readonly code: number) {
    super(`exit ${code}`);
  }
}

describe("a node's heartbeat and moat node", () => {
  let api: RunningAPI;
  let dataDir: string;
  before(async () => {
    dataDir = await mkdtemp(path.join(tmpdir(), "moat-cli-nodes-"));
    api = await startAPI({
      dataDir,
      databaseURL: "memory://",
      host: "127.0.0.1",
      port: 0,
      orchestrators: [],
      nodeToken: NODE_TOKEN,
      adminToken: ADMIN_TOKEN,
      // The CLI runs below take seconds each: the node must not go stale meanwhile.
      nodeHeartbeatTimeoutSeconds: 600,
      logger: createNoopLogger(),
      watchNodes: false,
    });
  });
  after(async () => {
    await api.close();
    await rm(dataDir, { recursive: true, force: true });
  });

  test("the heartbeat registers the node with what it reports", async () => {
    const logger = countingLogger();
    const hb = heartbeat(api.url, NODE_TOKEN, logger);
    await hb.beat();
    await hb.beat();
    assert.deepEqual(logger.warns, []);
    assert.deepEqual(logger.infos, ["registered with the API"], "logged once");
    const res = await fetch(`${api.url}/nodes/n1`, { headers: { "X-Admin-Token": ADMIN_TOKEN } });
    const node = (await res.json()) as {
      status: string;
      rpcURL: string;
      proxyURL: string;
      labels: string[];
      builds: number;
      capacity: { cpus: number; memoryMB: number };
      load: { cpuPercent: number; sandboxes: number; starting: number; poolReady: number };
    };
    assert.equal(node.status, "ready");
    assert.equal(node.rpcURL, "http://127.0.0.1:5008");
    assert.equal(node.proxyURL, "http://127.0.0.1:5007");
    assert.deepEqual(node.labels, ["build"]);
    assert.equal(node.builds, 2);
    assert.ok(node.capacity.cpus >= 1 && node.capacity.memoryMB > 0);
    assert.equal(node.load.sandboxes, 3);
    assert.equal(node.load.starting, 1);
    assert.equal(node.load.poolReady, 2);
    assert.ok(node.load.cpuPercent >= 0 && node.load.cpuPercent <= 100);
  });

  test("a refused or unreachable API is logged once per change, never thrown", async () => {
    const logger = countingLogger();
    const wrong = heartbeat(api.url, `${NODE_TOKEN}-wrong`, logger);
    for (let i = 0; i < 3; i++) await wrong.beat();
    assert.equal(logger.warns.length, 1);
    const nowhere = heartbeat("http://127.0.0.1:9", NODE_TOKEN, logger);
    for (let i = 0; i < 3; i++) await nowhere.beat();
    assert.equal(logger.warns.length, 2);
    await wrong.stop();
    await nowhere.stop();
  });

  test("moat node list, drain and ready; clear errors", async () => {
    const env = { MOAT_ADMIN_TOKEN: ADMIN_TOKEN, MOAT_API_URL: api.url };
    const list = await moat(["node", "list"], env);
    assert.equal(list.code, 0, list.stderr);
    assert.match(list.stdout, /^NODE\s+STATUS/m);
    assert.match(list.stdout, /^n1\s+ready\s+0\s/m);
    const drain = await moat(["node", "drain", "n1"], env);
    assert.equal(drain.code, 0, drain.stderr);
    assert.match(drain.stdout, /node n1: draining/);
    const json = await moat(["node", "list", "--json"], env);
    assert.equal((JSON.parse(json.stdout) as Array<{ status: string }>)[0]!.status, "draining");
    assert.match((await moat(["node", "ready", "n1"], env)).stdout, /node n1: ready/);

    const unknown = await moat(["node", "drain", "nope"], env);
    assert.equal(unknown.code, 1);
    assert.match(unknown.stderr, /404: node 'nope' not found/);
    const noToken = await moat(["node", "list", "--api-url", api.url], {});
    assert.equal(noToken.code, 1);
    assert.match(noToken.stderr, /no admin token: set MOAT_ADMIN_TOKEN/);
    const wrongToken = await moat(["node", "list"], { ...env, MOAT_ADMIN_TOKEN: "wrong-token-0123456789" });
    assert.equal(wrongToken.code, 1);
    assert.match(wrongToken.stderr, /401.*check MOAT_ADMIN_TOKEN/);
    const down = await moat(["node", "list", "--api-url", "http://127.0.0.1:9"], env);
    assert.equal(down.code, 1);
    assert.match(down.stderr, /cannot reach the API at http:\/\/127.0.0.1:9/);
  });
});
