/**
 * Runs a real orchestrator (`moat orchestrator`, the built CLI) on a temporary data directory. The
 * runtime and base template are shared with the machine's cache (MOAT_DATA_DIR, default
 * /var/lib/moat, filled by `moat setup`) through symlinks, so tests do not rebuild a template;
 * everything a test creates stays under the temporary directory.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { once } from "node:events";
import { mkdir, mkdtemp, readdir, readFile, rm, symlink } from "node:fs/promises";
import net from "node:net";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { isDeepStrictEqual } from "node:util";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { type Client, createClient, type Transport } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import {
  BUILTIN_TEAM,
  listLinks,
  listNamespaces,
  loopDevicesUnder,
  mountsUnder,
  nodeTokenPath,
} from "@moat/orchestrator";
import { runCommand } from "@moat/shared";
import { type SandboxInfo, SandboxService } from "@moat/shared/gen/orchestrator";
import { Sandbox } from "e2b";

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../../..");
const moatBin = path.join(repoRoot, "packages/cli/bin/moat.js");
export const CACHE_DIR = process.env.MOAT_DATA_DIR ?? "/var/lib/moat";

export interface RunningOrchestrator {
  readonly dataDir: string;
  readonly port: number;
  /** The node proxy's port (on loopback; every request needs the node token). */
  readonly proxyPort: number;
  /** The node token every RPC carries (made by the orchestrator in its data directory). */
  readonly token: string;
  readonly client: Client<typeof SandboxService>;
  child: ChildProcess;
  log(): string;
  /** SIGTERM (clean stop) or SIGKILL (crash); sandboxes keep running either way. */
  stop(signal?: NodeJS.Signals): Promise<void>;
  /** Starts a new orchestrator process on the same data directory and port (env: MOAT_FAULTS, …). */
  restart(env?: Record<string, string>): Promise<void>;
}

export async function makeDataDir(): Promise<string> {
  const dataDir = await mkdtemp(path.join(tmpdir(), "moat-test-"));
  await mkdir(path.join(dataDir, "templates"), { recursive: true });
  await symlink(path.join(CACHE_DIR, "runtime"), path.join(dataDir, "runtime"));
  await symlink(path.join(CACHE_DIR, "templates", "base"), path.join(dataDir, "templates", "base"));
  await linkBuiltinTemplates(dataDir);
  return dataDir;
}

/**
 * Links the built-in templates' builds (the code-interpreter template, which `moat setup` builds
 * into the cache) and their layers into `dataDir`, so a test's moat finds them instead of
 * building them again.
 */
async function linkBuiltinTemplates(dataDir: string): Promise<void> {
  const builds = path.join(CACHE_DIR, "templates", "builds");
  for (const buildID of await readdir(builds).catch(() => [] as string[])) {
    let manifest: { teamID?: string; layers?: string[] };
    try {
      manifest = JSON.parse(await readFile(path.join(builds, buildID, "build.json"), "utf8"));
    } catch {
      continue;
    }
    if (manifest.teamID !== BUILTIN_TEAM) continue;
    await mkdir(path.join(dataDir, "templates", "builds"), { recursive: true });
    await mkdir(path.join(dataDir, "templates", "layers"), { recursive: true });
    await symlink(path.join(builds, buildID), path.join(dataDir, "templates", "builds", buildID));
    for (const key of manifest.layers ?? []) {
      const link = path.join(dataDir, "templates", "layers", key);
      await symlink(path.join(CACHE_DIR, "templates", "layers", key), link).catch(() => undefined);
    }
  }
}

/** The node token an orchestrator keeps in its data directory (made on its first start). */
export async function readNodeToken(dataDir: string): Promise<string> {
  return (await readFile(nodeTokenPath(dataDir), "utf8")).trim();
}

/** A gRPC transport to an orchestrator (on loopback by default) that sends its node token with every call. */
export function nodeTransport(port: number, token: string, host = "127.0.0.1"): Transport {
  return createGrpcTransport({
    baseUrl: `http://${host}:${port}`,
    interceptors: [
      (next) => (req) => {
        req.header.set("authorization", `Bearer ${token}`);
        return next(req);
      },
    ],
  });
}

/** A free TCP port on loopback (closed again before it is returned). */
/** Ports handed out by this test process, so that two calls never return the same one. */
const handedOut = new Set<number>();

/**
 * A port nothing listens on, for a server the test starts later. It is taken below the kernel's
 * ephemeral range: a port from `listen(0)` is in that range, and in the seconds before the server
 * binds it, an outgoing connection of any process (or a second `listen(0)`) can take it.
 */
export async function freePort(): Promise<number> {
  const [low] = (await readFile("/proc/sys/net/ipv4/ip_local_port_range", "utf8"))
    .trim()
    .split(/\s+/)
    .map(Number);
  const top = Math.min(low ?? 32768, 65536);
  const bottom = Math.max(1024, top - 12000);
  for (let attempt = 0; attempt < 200; attempt++) {
    const port = bottom + Math.floor(Math.random() * (top - bottom));
    if (handedOut.has(port)) continue;
    const server = net.createServer();
    const bound = await new Promise<boolean>((resolve) => {
      server.once("error", () => resolve(false));
      server.listen(port, "127.0.0.1", () => resolve(true));
    });
    if (!bound) continue;
    await new Promise((r) => server.close(r));
    handedOut.add(port);
    return port;
  }
  throw new Error("no free port below the ephemeral range after 200 tries");
}

/** `env` reaches the orchestrator process (MOAT_POOL_SIZE, MOAT_TEMPLATE_SNAPSHOTS, MOAT_FAULTS, …). */
export interface StartOrchestratorOptions {
  env?: Record<string, string>;
  /** The address the RPC and the node proxy listen on (`--host`); default 127.0.0.1. */
  host?: string;
}

export async function startOrchestrator(
  dataDir?: string,
  options: StartOrchestratorOptions = {},
): Promise<RunningOrchestrator> {
  const dir = dataDir ?? (await makeDataDir());
  const port = await freePort();
  const proxyPort = await freePort();
  let output = "";
  const launch = async (env: Record<string, string> = options.env ?? {}) => {
    const logStart = output.length;
    const child = spawn(
      process.execPath,
      [
        moatBin,
        "orchestrator",
        "--data-dir",
        dir,
        "--port",
        String(port),
        "--proxy-port",
        String(proxyPort),
        ...(options.host ? ["--host", options.host] : []),
      ],
      {
        stdio: ["ignore", "ignore", "pipe"],
        // No warm pools unless a test asks: their sandboxes and networks would be in every leak
        // check's picture.
        env: {
          ...process.env,
          MOAT_LOG_LEVEL: "debug",
          MOAT_POOL_SIZE: "0",
          MOAT_NETWORK_POOL_SIZE: "0",
          MOAT_CODE_INTERPRETER: "off",
          ...env,
        },
      },
    );
    child.stderr!.on("data", (chunk: Buffer) => {
      const text = chunk.toString();
      output += text;
      // Warnings and errors reach the test output, so a failure in CI can be understood.
      for (const line of text.split("\n"))
        if (/"level":(40|50|60)/.test(line)) process.stderr.write(`${line}\n`);
    });
    const deadline = Date.now() + 120_000;
    // Ready once it listens and the base template is prepared (its snapshot built or found, the
    // pool filled); with snapshots off the template is "prepared" before the server listens.
    const ready = () =>
      /orchestrator listening/.test(output.slice(logStart)) &&
      /template prepared|preparing the template snapshot failed/.test(output.slice(logStart));
    while (!ready()) {
      if (child.exitCode !== null) throw new Error(`orchestrator exited with ${child.exitCode}: ${output}`);
      if (Date.now() > deadline) {
        // Gone before the throw: a teardown's restart must not meet it on the same data directory.
        if (child.signalCode === null) {
          child.kill("SIGKILL");
          await once(child, "exit");
        }
        throw new Error(`orchestrator did not start: ${output}`);
      }
      await new Promise((r) => setTimeout(r, 50));
    }
    return child;
  };
  const child = await launch();
  const token = await readNodeToken(dir);
  const handle: RunningOrchestrator = {
    dataDir: dir,
    port,
    proxyPort,
    token,
    client: createClient(SandboxService, nodeTransport(port, token, options.host)),
    child,
    log: () => output,
    async stop(signal = "SIGTERM") {
      const { child } = handle;
      if (child.exitCode !== null || child.signalCode !== null) return;
      child.kill(signal);
      await once(child, "exit");
    },
    async restart(env?: Record<string, string>) {
      await handle.stop();
      handle.child = await launch(env);
    },
  };
  return handle;
}

export interface CreateOptions {
  sandboxID?: string;
  templateID?: string;
  buildID?: string;
  vcpu?: number;
  memoryMB?: number;
  timeoutMs?: number;
  envVars?: Record<string, string>;
  accessToken?: string;
  allowInternetAccess?: boolean;
  autoPause?: boolean;
}

let counter = 0;
export function newSandboxID(): string {
  return `t${Date.now().toString(36)}${(counter++).toString(36)}${Math.random().toString(36).slice(2, 6)}`;
}

export async function createSandbox(
  orch: RunningOrchestrator,
  options: CreateOptions = {},
): Promise<SandboxInfo> {
  const res = await orch.client.create({
    sandbox: {
      sandboxId: options.sandboxID ?? newSandboxID(),
      templateId: options.templateID ?? "base",
      buildId: options.buildID ?? "",
      vcpu: options.vcpu ?? 1,
      memoryMb: options.memoryMB ?? 512,
      envVars: options.envVars ?? {},
      envdAccessToken: options.accessToken ?? "",
      allowInternetAccess: options.allowInternetAccess ?? true,
      autoPause: options.autoPause ?? false,
    },
    endTime: timestampFromDate(new Date(Date.now() + (options.timeoutMs ?? 300_000))),
  });
  // The orchestrator never echoes the token; keep it with the info for sdkFor.
  res.sandbox!.config!.envdAccessToken = options.accessToken ?? "";
  return res.sandbox!;
}

/** The official SDK's Sandbox, talking to the sandbox's envd directly at its host address. */
export function sdkFor(info: SandboxInfo): Sandbox {
  return new Sandbox({
    sandboxId: info.config!.sandboxId,
    envdVersion: info.envdVersion,
    envdAccessToken: info.config?.envdAccessToken || undefined,
    sandboxUrl: `http://${info.hostAddress}:49983`,
    apiKey: "e2b_unused",
  });
}

/**
 * What the host holds that a sandbox could leak: namespaces, links, addresses, containers, mounts
 * (overlays and disks), loop devices (of the disk images), dirs. Takes a running orchestrator or a
 * running `moat up`.
 */
export async function hostResources(orch: { dataDir: string }) {
  const runscPath = JSON.parse(
    (
      await runCommand(["cat", path.join(orch.dataDir, "runtime", "runsc.json")]).catch(() => ({
        stdout: "{}",
      }))
    ).stdout,
  ) as { install?: { path?: string } };
  // Relative paths in the record are relative to the runtime directory.
  const runsc = runscPath.install?.path && path.resolve(orch.dataDir, "runtime", runscPath.install.path);
  const containers = runsc
    ? (
        await runCommand([runsc, "--root", path.join(orch.dataDir, "runsc"), "list", "--quiet"]).catch(
          () => ({ stdout: "" }),
        )
      ).stdout
        .split("\n")
        .filter(Boolean)
        .sort()
    : [];
  const addresses = (await runCommand(["ip", "-o", "addr", "show"])).stdout
    .split("\n")
    .map((l) => l.split(/\s+/).slice(1, 4).join(" "))
    .filter(Boolean)
    .sort();
  const routes = (await runCommand(["ip", "route", "show"])).stdout.split("\n").filter(Boolean).sort();
  const dirs = await readdir(path.join(orch.dataDir, "sandboxes")).catch(() => [] as string[]);
  return {
    namespaces: (await listNamespaces()).sort(),
    links: (await listLinks()).sort(),
    addresses,
    routes,
    containers,
    mounts: (await mountsUnder(orch.dataDir)).sort(),
    loops: (await loopDevicesUnder(orch.dataDir)).map((l) => `${l.device} ${l.backingFile}`),
    dirs: dirs.sort(),
  };
}

export type HostResources = Awaited<ReturnType<typeof hostResources>>;

/**
 * hostResources once the fields of `expected` are as it says, or as it is after `timeoutMs`: a
 * kill answers once the sandbox is stopped, and its release (runsc delete, unmounts, network,
 * directory) ends in the background a moment later.
 */
export async function settledHostResources(
  orch: { dataDir: string },
  expected: Partial<HostResources>,
  timeoutMs = 15_000,
): Promise<HostResources> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const now = await hostResources(orch);
    const settled = Object.entries(expected).every(([key, value]) =>
      isDeepStrictEqual(now[key as keyof HostResources], value),
    );
    if (settled || Date.now() > deadline) return now;
    await new Promise((r) => setTimeout(r, 100));
  }
}

export async function removeDataDir(dataDir: string): Promise<void> {
  await rm(dataDir, { recursive: true, force: true });
}
