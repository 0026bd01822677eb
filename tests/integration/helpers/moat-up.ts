/**
 * Runs `moat up` (the built CLI) on a temporary data directory sharing the machine's runtime and
 * base template cache, and points the e2b SDK at it through the variables it prints.
 */

import { type ChildProcess, spawn } from "node:child_process";
import { lookup } from "node:dns/promises";
import { once } from "node:events";
import { readdir, readFile } from "node:fs/promises";
import http from "node:http";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { findDebianMirror } from "@moat/orchestrator";
import { CACHE_DIR, freePort, makeDataDir, readNodeToken, removeDataDir } from "./orchestrator.js";

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../../..");
const moatBin = path.join(repoRoot, "packages/cli/bin/moat.js");

export interface RunningMoat {
  readonly dataDir: string;
  readonly env: Record<string, string>;
  /** The node's orchestrator gRPC/Connect port on 127.0.0.1 (Get, List, … for checks behind the API). */
  readonly orchestratorPort: number;
  /** The orchestrator's Prometheus GET /metrics port (on 127.0.0.1, with the metrics token). */
  readonly orchestratorMetricsPort: number;
  /** The node token its orchestrator RPC needs (see nodeTransport). */
  readonly nodeToken: string;
  child: ChildProcess;
  log(): string;
  /** Ctrl-C: stops everything, killing the sandboxes; SIGKILL: a crash, sandboxes left as they are. */
  stop(signal?: NodeJS.Signals): Promise<void>;
  /** A second `moat up` on the same data directory (after stop); `env` adds to the first one's. */
  restart(options?: { signal?: NodeJS.Signals; env?: Record<string, string> }): Promise<void>;
  cleanup(): Promise<void>;
}

/**
 * `env` reaches the moat process (MOAT_POOL_SIZE, MOAT_TEMPLATE_SNAPSHOTS, MOAT_FAULTS, …);
 * `openFiles` sets its open-file limit (soft and hard); `host`: what the API, the proxy and the
 * orchestrator's metrics listen on (default 127.0.0.1). `codeInterpreter`: with the
 * code-interpreter template (built into the cache by `moat setup` first when it is not there);
 * without it, moat leaves the template out.
 */
export async function startMoat(
  options: {
    env?: Record<string, string>;
    openFiles?: number;
    codeInterpreter?: boolean;
    host?: string;
  } = {},
): Promise<RunningMoat> {
  if (options.codeInterpreter) await setupCache();
  const dataDir = await makeDataDir();
  const ports = {
    api: await freePort(),
    proxy: await freePort(),
    orchestrator: await freePort(),
    orchestratorMetrics: await freePort(),
  };
  let output = "";
  const launch = async (extraEnv: Record<string, string> = {}) => {
    const from = output.length;
    const argv = [
      process.execPath,
      moatBin,
      "up",
      "--data-dir",
      dataDir,
      "--api-port",
      String(ports.api),
      "--proxy-port",
      String(ports.proxy),
      "--orchestrator-port",
      String(ports.orchestrator),
      "--orchestrator-metrics-port",
      String(ports.orchestratorMetrics),
      ...(options.host ? ["--host", options.host] : []),
    ];
    const limited = options.openFiles
      ? ["prlimit", `--nofile=${options.openFiles}:${options.openFiles}`, "--", ...argv]
      : argv;
    const child = spawn(limited[0]!, limited.slice(1), {
      stdio: ["ignore", "pipe", "pipe"],
      // No warm pool unless asked: its sandboxes would be in every leak check's picture.
      env: {
        ...process.env,
        MOAT_LOG_LEVEL: "info",
        MOAT_POOL_SIZE: "0",
        MOAT_CODE_INTERPRETER: options.codeInterpreter ? "on" : "off",
        ...options.env,
        ...extraEnv,
      },
    });
    const collect = (chunk: Buffer) => {
      output += chunk.toString();
    };
    child.stdout!.on("data", collect);
    child.stderr!.on("data", collect);
    const deadline = Date.now() + (options.codeInterpreter ? 600_000 : 180_000);
    // Up, and the base template prepared (its snapshot found or built, the pool filled).
    // With the code interpreter, its snapshot too (made again when envd's code changed).
    const ready = () =>
      output.slice(from).includes("moat is up") &&
      /template prepared|preparing the template snapshot failed/.test(output.slice(from)) &&
      (!options.codeInterpreter ||
        /"templateID":"code-interpreter-v1"[^\n]*"msg":"(template prepared|preparing the template snapshot failed)/.test(
          output.slice(from),
        ));
    while (!ready()) {
      if (child.exitCode !== null)
        throw new Error(`moat up exited with ${child.exitCode}: ${output.slice(from)}`);
      if (Date.now() > deadline) {
        child.kill("SIGKILL");
        throw new Error(`moat up did not come up: ${output.slice(from)}`);
      }
      await new Promise((r) => setTimeout(r, 100));
    }
    return child;
  };
  const readEnv = async () => {
    const text = await readFile(path.join(dataDir, ".env"), "utf8");
    return Object.fromEntries(
      text
        .split("\n")
        .filter((l) => l.includes("="))
        .map((l) => [l.slice(0, l.indexOf("=")), l.slice(l.indexOf("=") + 1)]),
    );
  };
  // A moat that never came up leaves no data directory behind.
  const child = await launch().catch(async (err: unknown) => {
    await removeDataDir(dataDir).catch(() => undefined);
    throw err;
  });
  const handle: RunningMoat = {
    dataDir,
    env: await readEnv(),
    orchestratorPort: ports.orchestrator,
    orchestratorMetricsPort: ports.orchestratorMetrics,
    nodeToken: await readNodeToken(dataDir),
    child,
    log: () => output,
    async stop(signal = "SIGINT") {
      const c = handle.child;
      if (c.exitCode !== null || c.signalCode !== null) return;
      c.kill(signal);
      await once(c, "exit");
    },
    async restart({ signal, env } = {}) {
      await handle.stop(signal);
      handle.child = await launch(env);
      Object.assign(handle.env, await readEnv());
    },
    async cleanup() {
      await handle.stop();
      await removeDataDir(dataDir);
    },
  };
  return handle;
}

/**
 * `moat setup` on the cache: quick when its templates are built, minutes the first time. The
 * code-interpreter build runs apt-get in a build sandbox, under the sandboxes' egress rules: where
 * this host's Debian mirror is on a denied (private or reserved) address, the build is allowed
 * that address and port, and nothing else.
 */
async function setupCache(): Promise<void> {
  const allow = [process.env.MOAT_EGRESS_ALLOW, ...(await mirrorAddresses())].filter(Boolean).join(",");
  const child = spawn(process.execPath, [moatBin, "setup", "--data-dir", CACHE_DIR], {
    stdio: ["ignore", "inherit", "inherit"],
    env: { ...process.env, ...(allow ? { MOAT_EGRESS_ALLOW: allow } : {}) },
  });
  const [code] = (await once(child, "exit")) as [number | null];
  if (code !== 0) throw new Error(`moat setup --data-dir ${CACHE_DIR} failed (${code})`);
  const built = await readdir(path.join(CACHE_DIR, "templates", "builds")).catch(() => [] as string[]);
  if (!built.some((b) => b.startsWith("code-interpreter-v1-"))) {
    throw new Error(
      `moat setup did not build the code-interpreter template into ${CACHE_DIR} (see its output)`,
    );
  }
}

/** `address:port` of the host's Debian mirrors. */
async function mirrorAddresses(): Promise<string[]> {
  const mirror = await findDebianMirror();
  const out: string[] = [];
  for (const uri of [mirror.uri, mirror.securityURI]) {
    if (!uri) continue;
    const url = new URL(uri);
    const { address } = await lookup(url.hostname, { family: 4 }).catch(() => ({ address: "" }));
    if (address) out.push(`${address}:${url.port || (url.protocol === "https:" ? 443 : 80)}`);
  }
  return [...new Set(out)];
}

/** Points the SDK (through its environment variables) at a running moat. */
export function useMoat(moat: RunningMoat): void {
  delete process.env.E2B_DEBUG;
  process.env.E2B_API_KEY = moat.env.E2B_API_KEY;
  process.env.E2B_API_URL = moat.env.E2B_API_URL;
  process.env.E2B_SANDBOX_URL = moat.env.E2B_SANDBOX_URL;
  process.env.E2B_DOMAIN = moat.env.E2B_DOMAIN;
  process.env.E2B_VOLUME_API_URL = moat.env.E2B_VOLUME_API_URL;
}

/** GET through the proxy with Host <port>-<id>.<domain>, as a browser on the sandbox URL does. */
export function getByHost(
  moat: RunningMoat,
  sandboxID: string,
  port: number,
  urlPath: string,
): Promise<{ status: number; body: string }> {
  const proxy = new URL(moat.env.E2B_SANDBOX_URL!);
  return new Promise((resolve, reject) => {
    const req = http.get(
      {
        host: proxy.hostname,
        port: proxy.port,
        path: urlPath,
        headers: { host: `${port}-${sandboxID}.${moat.env.E2B_DOMAIN}` },
        timeout: 30_000,
      },
      (res) => {
        let body = "";
        res.setEncoding("utf8");
        res.on("data", (c: string) => {
          body += c;
        });
        res.on("end", () => resolve({ status: res.statusCode ?? 0, body }));
      },
    );
    req.once("timeout", () => req.destroy(new Error("timed out")));
    req.once("error", reject);
  });
}
