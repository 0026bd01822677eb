/**
 * Runs a real envd (`moat envd`, the built CLI) on port 49983, where the e2b SDK in debug mode
 * (`E2B_DEBUG=true`) looks for it, and makes sure the test machine has the `user` account E2B
 * sandboxes have.
 */
import { type ChildProcess, execFileSync, spawn } from "node:child_process";
import { once } from "node:events";
import { chownSync, mkdtempSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { Sandbox } from "e2b";

export const ENVD_URL = "http://localhost:49983";
const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../../..");
const moatBin = path.join(repoRoot, "packages/cli/bin/moat.js");

export interface RunningEnvd {
  readonly url: string;
  readonly child: ChildProcess;
  /** Everything envd wrote to stderr (its structured log). */
  log(): string;
  stop(): Promise<void>;
}

/** Creates the `user` account (home /home/user, bash) when the machine lacks it. */
export function ensureTestUser(): void {
  try {
    execFileSync("id", ["user"], { stdio: "ignore" });
  } catch {
    execFileSync("useradd", ["--create-home", "--shell", "/bin/bash", "user"], { stdio: "inherit" });
  }
}

/**
 * A temp directory owned by `user`, where the SDK (acting as `user` by default) may create files:
 * envd holds REST calls to the acting user's permissions, and mkdtemp makes root's 0700 dirs.
 */
export function makeUserDir(prefix: string): string {
  ensureTestUser();
  const dir = mkdtempSync(prefix);
  const [uid, gid] = ["-u", "-g"].map((flag) =>
    Number(execFileSync("id", [flag, "user"], { encoding: "utf8" })),
  );
  chownSync(dir, uid!, gid!);
  return dir;
}

/** `env` adds to envd's environment (MOAT_ENVD_SPAWN=node: Node's child_process starts commands). */
export async function startEnvd(
  extraArgs: string[] = [],
  logLevel = "debug",
  env: Record<string, string> = {},
): Promise<RunningEnvd> {
  ensureTestUser();
  process.env.E2B_DEBUG = "true";
  const child = spawn(process.execPath, [moatBin, "envd", "--port", "49983", ...extraArgs], {
    stdio: ["ignore", "ignore", "pipe"],
    env: { ...process.env, MOAT_LOG_LEVEL: logLevel, ...env },
  });
  let stderr = "";
  child.stderr!.on("data", (chunk: Buffer) => {
    stderr += chunk.toString();
  });
  const deadline = Date.now() + 10_000;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`envd exited with ${child.exitCode}: ${stderr}`);
    try {
      const res = await fetch(`${ENVD_URL}/health`);
      if (res.status === 204) break;
    } catch {
      // not listening yet
    }
    if (Date.now() > deadline) {
      child.kill("SIGKILL");
      throw new Error(`envd did not answer /health within 10 s: ${stderr}`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  return {
    url: ENVD_URL,
    child,
    log: () => stderr,
    async stop() {
      if (child.exitCode !== null || child.signalCode !== null) return;
      child.kill("SIGTERM");
      const timer = setTimeout(() => child.kill("SIGKILL"), 5000);
      await once(child, "exit");
      clearTimeout(timer);
    },
  };
}

/** The SDK's view of the local envd: debug mode, no API involved. */
export function debugSandbox(): Promise<Sandbox> {
  process.env.E2B_DEBUG = "true";
  return Sandbox.create();
}

/** Calls envd's /init the way the orchestrator does. */
export async function initEnvd(body: Record<string, unknown>): Promise<Response> {
  return fetch(`${ENVD_URL}/init`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify(body),
  });
}
