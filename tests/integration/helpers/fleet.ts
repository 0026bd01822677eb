/**
 * A fleet on this machine: N orchestrator nodes, each in a network namespace of its own (a
 * "host": `moatfleet-<n>`, 10.98.<n>.2, a veth to the root namespace at 10.98.<n>.1) with its own
 * name prefix (`moat-<n>-`) and data directory; `moat api` processes sharing a fresh PostgreSQL
 * database, `moat proxy` processes, and Debian's `redis-server`, all in the root namespace.
 *
 * The APIs listen on 10.98.0.1, an address on a link of the root namespace (`moatfleet0`),
 * so that the nodes reach them (registration, template files) with one host route each; the
 * proxies and Redis on 127.0.0.1. No node has a default route: nothing a node or a sandbox sends
 * leaves this machine. Everything is removed by `close()`, also after a failed start.
 *
 * What the branch's commands support is asked of their `--help` (`--api-url` of the nodes part,
 * `--proxy-port` of the routing part, `--artifacts`), so the harness runs before and after those
 * parts land.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { once } from "node:events";
import { appendFileSync, mkdirSync } from "node:fs";
import { mkdir, mkdtemp, readdir, readFile, rm, symlink } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { type Client, createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import {
  listLinks,
  listNamespaces,
  loopDevicesUnder,
  mountsUnder,
  removeSandboxDir,
} from "@moat/orchestrator";
import { runCommand } from "@moat/shared";
import { SandboxService } from "@moat/shared/gen/orchestrator";
import { CACHE_DIR, freePort } from "./orchestrator.js";

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../../..");
const moatBin = path.join(repoRoot, "packages/cli/bin/moat.js");
const POSTGRES_URL =
  process.env.MOAT_TEST_POSTGRES_URL || "postgres://moat_test:moat_test@127.0.0.1:5432/moat_test";
/** Where the APIs listen: nodes reach it over their veth, the test on this machine. */
export const API_ADDRESS = "10.98.0.1";
const API_LINK = "moatfleet0";
const NODE_RPC_PORT = 5008;
const NODE_PROXY_PORT = 5007;
/** MOAT_FLEET_LOG_DIR: where each process's output is copied as it comes (to read after a failure). */
const LOG_DIR = process.env.MOAT_FLEET_LOG_DIR;
if (LOG_DIR) mkdirSync(LOG_DIR, { recursive: true });

export interface FleetOptions {
  /** Orchestrator nodes (default 3). */
  nodes?: number;
  /** `moat api` processes (default 2). */
  apis?: number;
  /** `moat proxy` processes (default 2). */
  proxies?: number;
  /** Added to every node's environment (MOAT_POOL_SIZE, MOAT_FAULTS, …). */
  nodeEnv?: Record<string, string>;
  /** Added to every API's environment. */
  apiEnv?: Record<string, string>;
}

/** One process of the fleet, with its output. */
export class FleetProcess {
  output = "";
  child: ChildProcess;

  constructor(
    readonly name: string,
    private readonly argv: string[],
    private readonly env: Record<string, string>,
  ) {
    this.child = this.spawn();
  }

  private spawn(): ChildProcess {
    const child = spawn(this.argv[0]!, this.argv.slice(1), {
      stdio: ["ignore", "pipe", "pipe"],
      env: { ...process.env, ...this.env },
    });
    const collect = (chunk: Buffer) => {
      const text = chunk.toString();
      this.output += text;
      if (LOG_DIR) appendFileSync(path.join(LOG_DIR, `${this.name}.log`), text);
      // Errors reach the test output, so that a failure in CI can be understood.
      for (const line of text.split("\n"))
        if (/"level":(50|60)/.test(line)) process.stderr.write(`[${this.name}] ${line}\n`);
    };
    child.stdout!.on("data", collect);
    child.stderr!.on("data", collect);
    return child;
  }

  get running(): boolean {
    return this.child.exitCode === null && this.child.signalCode === null;
  }

  /** Waits until the output since `from` matches every pattern; fails when the process exits first. */
  async waitFor(patterns: RegExp[], timeoutMs: number, from = 0): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!patterns.every((p) => p.test(this.output.slice(from)))) {
      if (!this.running)
        throw new Error(
          `${this.name} exited (${this.child.exitCode ?? this.child.signalCode}): ${this.tail()}`,
        );
      if (Date.now() > deadline) throw new Error(`${this.name} did not become ready: ${this.tail()}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  }

  tail(chars = 3000): string {
    return this.output.slice(-chars);
  }

  /** Sends `signal` and waits for the exit (a process that ignores SIGTERM gets SIGKILL after 10 s). */
  async kill(signal: NodeJS.Signals = "SIGTERM"): Promise<void> {
    if (!this.running) return;
    const exited = once(this.child, "exit");
    this.child.kill(signal);
    const timer = setTimeout(() => this.child.kill("SIGKILL"), 10_000);
    await exited;
    clearTimeout(timer);
  }

  /** A new process with the same command line (after kill). */
  restart(): number {
    const from = this.output.length;
    this.child = this.spawn();
    return from;
  }
}

export interface FleetNode {
  /** 1-based. */
  readonly index: number;
  readonly id: string;
  readonly namePrefix: string;
  /** The host's network namespace. */
  readonly namespace: string;
  readonly address: string;
  readonly rpcURL: string;
  readonly proxyURL: string;
  readonly dataDir: string;
  readonly process: FleetProcess;
  readonly client: Client<typeof SandboxService>;
}

export interface Fleet {
  readonly nodes: FleetNode[];
  readonly apis: FleetProcess[];
  readonly proxies: FleetProcess[];
  readonly apiURLs: string[];
  readonly proxyURLs: string[];
  readonly redisURL: string;
  readonly databaseURL: string;
  /** MOAT_NODE_TOKEN of every component. */
  readonly nodeToken: string;
  readonly adminToken: string;
  /** A team's key, made through the first API. */
  readonly apiKey: string;
  readonly domain: string;
  /** What the command lines support on this branch. */
  readonly features: { registration: boolean; routing: boolean; artifacts: boolean };
  /** The artifacts directory every node shares (with the artifacts part). */
  readonly artifactsDir: string;
  /** Connection options for the `e2b` SDK through API `api` and proxy `proxy`. */
  sdk(
    api?: number,
    proxy?: number,
  ): { apiKey: string; apiUrl: string; sandboxUrl: string; domain: string; requestTimeoutMs: number };
  /** Sandbox ids running (or paused) on each node, asked of the nodes themselves. */
  sandboxesByNode(): Promise<Map<string, string[]>>;
  /** SIGKILL (a crash; sandboxes stay as they are) or SIGTERM a node. */
  killNode(index: number, signal?: NodeJS.Signals): Promise<void>;
  /** Starts a killed node again on the same data directory, and waits until it is ready. */
  restartNode(index: number): Promise<void>;
  killAPI(index: number, signal?: NodeJS.Signals): Promise<void>;
  restartAPI(index: number): Promise<void>;
  /** Kills everything and removes the namespaces, data directories, database and Redis. */
  close(): Promise<void>;
}

/** The flags a command's `--help` lists. */
async function commandFlags(command: string): Promise<string> {
  const { stdout } = await runCommand([process.execPath, moatBin, command, "--help"]);
  return stdout;
}

/** What the fleet parts on this branch offer, from `moat orchestrator --help`. */
export async function fleetFeatures(): Promise<Fleet["features"]> {
  const help = await commandFlags("orchestrator");
  return {
    registration: help.includes("--api-url"),
    // The node proxy is what lets a proxy in the root namespace reach sandboxes in a host.
    routing: help.includes("--proxy-port"),
    artifacts: help.includes("--artifacts"),
  };
}

/** Runs `work` on every item, at most `limit` at once; answers the results in order. */
export async function mapLimit<T, R>(
  items: T[],
  limit: number,
  work: (item: T, i: number) => Promise<R>,
): Promise<R[]> {
  const results: R[] = new Array(items.length);
  let next = 0;
  const worker = async () => {
    while (next < items.length) {
      const i = next++;
      results[i] = await work(items[i]!, i);
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  return results;
}

export async function startFleet(options: FleetOptions = {}): Promise<Fleet> {
  const nodeCount = options.nodes ?? 3;
  const apiCount = options.apis ?? 2;
  const proxyCount = options.proxies ?? 2;
  const tmp = await mkdtemp(path.join(tmpdir(), "moatfleet-"));
  const nodeToken = randomBytes(32).toString("hex");
  const adminToken = randomBytes(24).toString("hex");
  const domain = "moat.local";
  const database = `moat_test_fleet_${process.pid}`;
  const databaseURL = withDatabase(POSTGRES_URL, database);
  const state = {
    redis: undefined as FleetProcess | undefined,
    database: false,
    namespaces: [] as string[],
    apiLink: false,
    nodes: [] as FleetNode[],
    apis: [] as FleetProcess[],
    proxies: [] as FleetProcess[],
  };

  const close = async () => {
    const all = [...state.proxies, ...state.apis];
    await Promise.all(all.map((p) => p.kill("SIGTERM").catch(() => undefined)));
    // Nodes are killed outright: what they leave is removed below, as after a crash.
    await Promise.all(state.nodes.map((n) => n.process.kill("SIGKILL").catch(() => undefined)));
    for (const node of state.nodes) await removeNodeLeftovers(node).catch(reportCleanup(node.id));
    for (const ns of state.namespaces) await deleteHost(ns).catch(reportCleanup(ns));
    if (state.apiLink) await runCommand(["ip", "link", "delete", API_LINK]).catch(reportCleanup(API_LINK));
    if (state.redis) await state.redis.kill("SIGKILL");
    if (state.database) {
      await runCommand([
        "psql",
        POSTGRES_URL,
        "-qc",
        `DROP DATABASE IF EXISTS ${database} WITH (FORCE)`,
      ]).catch(reportCleanup(database));
    }
    await rm(tmp, { recursive: true, force: true });
  };

  try {
    await removeEarlierFleet();
    const features = await fleetFeatures();
    const artifactsDir = path.join(tmp, "artifacts");
    await mkdir(artifactsDir, { mode: 0o700 });

    // Redis: no persistence, its files in the temp dir.
    const redisPort = await freePort();
    const redisDir = path.join(tmp, "redis");
    await mkdir(redisDir);
    state.redis = new FleetProcess(
      "redis",
      [
        "redis-server",
        "--port",
        String(redisPort),
        "--bind",
        "127.0.0.1",
        "--dir",
        redisDir,
        "--save",
        "",
        "--appendonly",
        "no",
      ],
      {},
    );
    const redisURL = `redis://127.0.0.1:${redisPort}`;

    await runCommand(["psql", POSTGRES_URL, "-qc", `CREATE DATABASE ${database}`]);
    state.database = true;

    // The APIs' address, reachable from every host.
    // A veth pair with both ends here (this kernel has no dummy links): only its address matters.
    await runCommand(["ip", "link", "add", API_LINK, "type", "veth", "peer", "name", `${API_LINK}p`]);
    state.apiLink = true;
    await runCommand(["ip", "addr", "add", `${API_ADDRESS}/32`, "dev", API_LINK]);
    await runCommand(["ip", "link", "set", `${API_LINK}p`, "up"]);
    await runCommand(["ip", "link", "set", API_LINK, "up"]);

    const apiPorts = await Promise.all(Array.from({ length: apiCount }, () => freePort()));
    const apiURLs = apiPorts.map((p) => `http://${API_ADDRESS}:${p}`);

    // The hosts and their nodes.
    for (let n = 1; n <= nodeCount; n++) {
      const namespace = `moatfleet-${n}`;
      await makeHost(namespace, n);
      state.namespaces.push(namespace);
    }
    await state.redis.waitFor([/Ready to accept connections/], 10_000);
    const nodeEnv = {
      MOAT_LOG_LEVEL: "info",
      MOAT_CODE_INTERPRETER: "off",
      MOAT_POOL_SIZE: "0",
      MOAT_NETWORK_POOL_SIZE: "0",
      MOAT_NODE_TOKEN: nodeToken,
      ...options.nodeEnv,
    };
    for (let n = 1; n <= nodeCount; n++) {
      const address = `10.98.${n}.2`;
      const dataDir = await makeNodeDataDir(path.join(tmp, `node-${n}`));
      const argv = [
        "nsenter",
        `--net=/run/netns/moatfleet-${n}`,
        process.execPath,
        moatBin,
        "orchestrator",
        "--node-id",
        `node-${n}`,
        "--name-prefix",
        `moat-${n}-`,
        "--host",
        address,
        "--port",
        String(NODE_RPC_PORT),
        "--data-dir",
        dataDir,
        ...(features.registration ? ["--api-url", apiURLs[0]!] : []),
        ...(features.routing ? ["--proxy-port", String(NODE_PROXY_PORT)] : []),
        ...(features.artifacts ? ["--artifacts", artifactsDir] : []),
      ];
      const rpcURL = `http://${address}:${NODE_RPC_PORT}`;
      state.nodes.push({
        index: n,
        id: `node-${n}`,
        namePrefix: `moat-${n}-`,
        namespace: `moatfleet-${n}`,
        address,
        rpcURL,
        proxyURL: `http://${address}:${NODE_PROXY_PORT}`,
        dataDir,
        process: new FleetProcess(`node-${n}`, argv, nodeEnv),
        client: createClient(SandboxService, tokenTransport(rpcURL, nodeToken)),
      });
    }
    await Promise.all(state.nodes.map((node) => node.process.waitFor(NODE_READY, 180_000)));

    const apiEnv = {
      MOAT_LOG_LEVEL: "info",
      MOAT_NODE_TOKEN: nodeToken,
      MOAT_ADMIN_TOKEN: adminToken,
      MOAT_TEAM_MAX_SANDBOXES: "100",
      MOAT_TEAM_REQUESTS_PER_SECOND: "0",
      // The nodes share one artifacts directory: a build's sandboxes may start on any of them.
      ...(features.artifacts ? { MOAT_SHARED_ARTIFACTS: "1" } : {}),
      ...options.apiEnv,
    };
    for (let i = 0; i < apiCount; i++) {
      const argv = [
        process.execPath,
        moatBin,
        "api",
        "--host",
        API_ADDRESS,
        "--port",
        String(apiPorts[i]),
        "--data-dir",
        path.join(tmp, `api-${i}`),
        "--database-url",
        databaseURL,
        "--public-url",
        apiURLs[i]!,
        "--domain",
        domain,
        "--redis-url",
        redisURL,
        // Static nodes until the nodes register themselves.
        ...(features.registration ? [] : state.nodes.flatMap((n) => ["--node", `${n.id}=${n.rpcURL}`])),
      ];
      const api = new FleetProcess(`api-${i}`, argv, apiEnv);
      state.apis.push(api);
      // One at a time: the first migrates the database.
      await api.waitFor([/moat api: listening/], 60_000);
    }

    const proxyPorts = await Promise.all(Array.from({ length: proxyCount }, () => freePort()));
    // Without node proxies a proxy here reaches no sandbox (they are inside the hosts).
    if (features.routing) {
      for (let i = 0; i < proxyCount; i++) {
        const argv = [
          process.execPath,
          moatBin,
          "proxy",
          "--host",
          "127.0.0.1",
          "--port",
          String(proxyPorts[i]),
          "--domain",
          domain,
          "--redis-url",
          redisURL,
          "--api-url",
          apiURLs[i % apiCount]!,
        ];
        state.proxies.push(new FleetProcess(`proxy-${i}`, argv, { MOAT_NODE_TOKEN: nodeToken }));
      }
      await Promise.all(state.proxies.map((p) => p.waitFor([/moat proxy: listening/], 30_000)));
    }
    const proxyURLs = state.proxies.map((_, i) => `http://127.0.0.1:${proxyPorts[i]}`);

    const team = (await (
      await fetch(`${apiURLs[0]}/admin/teams`, {
        method: "POST",
        headers: { "x-admin-token": adminToken, "content-type": "application/json" },
        body: JSON.stringify({ name: "fleet" }),
      })
    ).json()) as { apiKey?: string };
    if (!team.apiKey) throw new Error(`POST /admin/teams answered no key: ${JSON.stringify(team)}`);

    const nodeByIndex = (index: number) => {
      const node = state.nodes[index - 1];
      if (!node) throw new Error(`no node ${index}`);
      return node;
    };
    return {
      nodes: state.nodes,
      apis: state.apis,
      proxies: state.proxies,
      apiURLs,
      proxyURLs,
      redisURL,
      databaseURL,
      nodeToken,
      adminToken,
      apiKey: team.apiKey,
      domain,
      features,
      artifactsDir,
      sdk(api = 0, proxy = 0) {
        return {
          apiKey: team.apiKey!,
          apiUrl: apiURLs[api]!,
          sandboxUrl: proxyURLs[proxy] ?? "http://127.0.0.1:1",
          domain,
          // Three nodes on two shared cores: a create can take a while.
          requestTimeoutMs: 120_000,
        };
      },
      async sandboxesByNode() {
        const out = new Map<string, string[]>();
        for (const node of state.nodes) {
          if (!node.process.running) continue;
          const { sandboxes } = await node.client.list({});
          out.set(
            node.id,
            sandboxes.map((s) => s.config?.sandboxId ?? "").filter((id) => id && !id.startsWith("pool-")),
          );
        }
        return out;
      },
      async killNode(index, signal = "SIGKILL") {
        await nodeByIndex(index).process.kill(signal);
      },
      async restartNode(index) {
        const node = nodeByIndex(index);
        const from = node.process.restart();
        await node.process.waitFor(NODE_READY, 180_000, from);
      },
      async killAPI(index, signal = "SIGKILL") {
        await state.apis[index]!.kill(signal);
      },
      async restartAPI(index) {
        const api = state.apis[index]!;
        const from = api.restart();
        await api.waitFor([/moat api: listening/], 60_000, from);
      },
      close,
    };
  } catch (err) {
    await close();
    throw err;
  }
}

/** A node is ready once it listens and its base template is prepared (snapshot built or found). */
const NODE_READY = [/orchestrator listening/, /template prepared|preparing the template snapshot failed/];

/** postgres://…/<db> with another database. */
function withDatabase(url: string, database: string): string {
  const u = new URL(url);
  u.pathname = `/${database}`;
  return u.toString();
}

/** A host: its namespace, loopback up, a veth to the root namespace, a route to the APIs' address. */
async function makeHost(namespace: string, n: number): Promise<void> {
  await runCommand(["ip", "netns", "add", namespace]);
  await runCommand([
    "ip",
    "link",
    "add",
    namespace,
    "type",
    "veth",
    "peer",
    "name",
    "eth0",
    "netns",
    namespace,
  ]);
  await runCommand(["ip", "addr", "add", `10.98.${n}.1/24`, "dev", namespace]);
  await runCommand(["ip", "link", "set", namespace, "up"]);
  await runCommand(["ip", "-n", namespace, "link", "set", "lo", "up"]);
  await runCommand(["ip", "-n", namespace, "addr", "add", `10.98.${n}.2/24`, "dev", "eth0"]);
  await runCommand(["ip", "-n", namespace, "link", "set", "eth0", "up"]);
  await runCommand(["ip", "-n", namespace, "route", "add", `${API_ADDRESS}/32`, "via", `10.98.${n}.1`]);
}

/**
 * What a fleet run killed before its cleanup (SIGKILL, a timeout of the runner) left on the host:
 * its namespaces and the APIs' link. The names are the fleet's alone and runs never overlap (they
 * hold the integration lock), so whatever carries them now is stale and would make this run fail.
 */
async function removeEarlierFleet(): Promise<void> {
  for (const name of await listNamespaces()) {
    if (!/^moatfleet-\d+$/.test(name)) continue;
    process.stderr.write(`fleet: removing namespace ${name} left by an earlier run\n`);
    await deleteHost(name);
  }
  if ((await listLinks()).includes(API_LINK)) {
    process.stderr.write(`fleet: removing link ${API_LINK} left by an earlier run\n`);
    await runCommand(["ip", "link", "delete", API_LINK]);
  }
}

async function deleteHost(namespace: string): Promise<void> {
  // The node lock of the namespace (a killed node leaves it; a later one would take it over).
  const inode = (
    await runCommand(["stat", "-L", "-c", "%i", `/run/netns/${namespace}`]).catch(() => undefined)
  )?.stdout.trim();
  if (inode) await rm(`/run/moat/netns-${inode}.pid`, { force: true });
  await runCommand(["ip", "netns", "delete", namespace]);
  // Gone with the namespace's end, unless something still holds it.
  await runCommand(["ip", "link", "delete", namespace]).catch(() => undefined);
}

/**
 * A node's data directory: the runtime linked from the machine's cache, and the base template's
 * rootfs too, but its snapshots its own (as on a machine of its own: nodes sharing the cache's
 * snapshot directory would build and prune the same files at once).
 */
export async function makeNodeDataDir(dataDir: string): Promise<string> {
  await mkdir(path.join(dataDir, "templates", "base"), { recursive: true });
  await symlink(path.join(CACHE_DIR, "runtime"), path.join(dataDir, "runtime"));
  const cacheBase = path.join(CACHE_DIR, "templates", "base");
  for (const hash of await readdir(cacheBase)) {
    if (hash.startsWith(".") || hash.includes("-")) continue;
    const dir = path.join(dataDir, "templates", "base", hash);
    await mkdir(dir);
    await symlink(path.join(cacheBase, hash, "rootfs"), path.join(dir, "rootfs"));
    await symlink(path.join(cacheBase, hash, "template.json"), path.join(dir, "template.json"));
  }
  return dataDir;
}

/** What a killed node leaves: its containers, mounts, loop devices, named namespaces and lock. */
async function removeNodeLeftovers(node: FleetNode): Promise<void> {
  const runsc = await runscPath(node.dataDir);
  const root = path.join(node.dataDir, "runsc");
  if (runsc) {
    const { stdout } = await runCommand([runsc, "--root", root, "list", "--quiet"]).catch(() => ({
      stdout: "",
    }));
    for (const id of stdout.split("\n").filter(Boolean))
      await runCommand([runsc, "--root", root, "delete", "--force", id]).catch(() => undefined);
  }
  const sandboxes = path.join(node.dataDir, "sandboxes");
  for (const name of await readdir(sandboxes).catch(() => [] as string[]))
    await removeSandboxDir(path.join(sandboxes, name)).catch(() => undefined);
  for (const mount of (await mountsUnder(node.dataDir)).reverse())
    await runCommand(["umount", "-l", mount]).catch(() => undefined);
  for (const loop of await loopDevicesUnder(node.dataDir))
    await runCommand(["losetup", "--detach", loop.device]).catch(() => undefined);
  for (const name of await listNamespaces())
    if (name.startsWith(node.namePrefix))
      await runCommand(["ip", "netns", "delete", name]).catch(() => undefined);
  await rm(`/run/moat/${node.namePrefix}orchestrator.pid`, { force: true });
}

async function runscPath(dataDir: string): Promise<string | undefined> {
  const record = JSON.parse(
    await readFile(path.join(dataDir, "runtime", "runsc.json"), "utf8").catch(() => "{}"),
  ) as { install?: { path?: string } };
  return record.install?.path && path.resolve(dataDir, "runtime", record.install.path);
}

function tokenTransport(baseUrl: string, token: string) {
  return createGrpcTransport({
    baseUrl,
    interceptors: [
      (next) => (req) => {
        req.header.set("authorization", `Bearer ${token}`);
        return next(req);
      },
    ],
  });
}

function reportCleanup(what: string) {
  return (err: unknown) => process.stderr.write(`fleet cleanup of ${what}: ${String(err)}\n`);
}

/** What the fleet could leave on the host: its namespaces, links, mounts and loop devices. */
export async function fleetLeftovers(tmpPrefix = path.join(tmpdir(), "moatfleet-")): Promise<string[]> {
  const left: string[] = [];
  for (const name of await listNamespaces())
    if (/^moatfleet-|^moat-\d+-/.test(name)) left.push(`netns ${name}`);
  const { stdout } = await runCommand(["ip", "-o", "link", "show"]);
  for (const line of stdout.split("\n"))
    if (/\bmoatfleet/.test(line)) left.push(`link ${line.split(":")[1]?.trim()}`);
  const mounts = await readFile("/proc/self/mountinfo", "utf8");
  for (const line of mounts.split("\n")) {
    const point = line.split(" ")[4];
    if (point?.startsWith(tmpPrefix)) left.push(`mount ${point}`);
  }
  const loops = await loopDevicesUnder(tmpdir());
  for (const loop of loops) if (loop.backingFile.startsWith(tmpPrefix)) left.push(`loop ${loop.device}`);
  return left;
}
