import { existsSync } from "node:fs";
import { readdir } from "node:fs/promises";
import { runCommand } from "@moat/shared";
import { pathWithSbin } from "../host/files.js";
import { processAlive } from "../host/process.js";
import { PATCHED_PROBE_FILE, ROOT_NETNS_PROBE_PATH } from "./netns-patch.js";

/** Temporary namespaces are named `moat-probe-<pid>-<n>` so a later run can reap a crashed one's. */
export const PROBE_NETNS_PREFIX = "moat-probe-";
const NETNS_DIR = "/var/run/netns";
let probeSeq = 0;

/**
 * Runs `fn` with a fresh, empty network namespace (created with `ip netns add`) and deletes it
 * afterwards, whatever `fn` does.
 */
export async function withProbeNetns<T>(fn: (name: string) => Promise<T>): Promise<T> {
  await reapStaleProbes();
  const name = `${PROBE_NETNS_PREFIX}${process.pid}-${probeSeq++}`;
  await ip(["netns", "add", name]);
  try {
    return await fn(name);
  } finally {
    await ip(["netns", "delete", name]);
  }
}

/** Runs argv inside a named netns; resolves with its exit code (non-zero is not an error here). */
export async function execInNetns(
  name: string,
  argv: string[],
): Promise<{ exitCode: number; output: string }> {
  const result = await runCommand(["ip", "netns", "exec", name, ...argv], {
    timeoutMs: 15_000,
    okCodes: Array.from({ length: 255 }, (_, i) => i + 1),
    env: { ...process.env, PATH: pathWithSbin() },
  });
  return { exitCode: result.exitCode, output: `${result.stdout}${result.stderr}` };
}

/** What a non-root netns shows of the files runsc uses to recognise the root netns. */
export interface NetnsProbe {
  /** /proc/sys/net/core/rmem_default is visible in a non-root netns: runsc < 20240801 misdetects it. */
  rootProbeLeaks: boolean;
  /** The patched binary's probe file exists in the root netns and not in the probe netns. */
  patchedProbeWorks: boolean;
}

/** Creates a temporary netns and checks which /proc/sys/net files it shows. */
export async function probeNetns(): Promise<NetnsProbe> {
  const inRoot = existsSync(PATCHED_PROBE_FILE);
  return withProbeNetns(async (name) => {
    const script = 'for p; do if test -e "$p"; then echo yes; else echo no; fi; done';
    const { output } = await execInNetns(name, [
      "sh",
      "-c",
      script,
      "sh",
      ROOT_NETNS_PROBE_PATH,
      PATCHED_PROBE_FILE,
    ]);
    const [rmem, patched] = output.trim().split("\n");
    return { rootProbeLeaks: rmem === "yes", patchedProbeWorks: inRoot && patched === "no" };
  });
}

/** Deletes probe namespaces left by processes that died before deleting them. */
async function reapStaleProbes(): Promise<void> {
  const names = await readdir(NETNS_DIR).catch(() => [] as string[]);
  for (const name of names) {
    const match = new RegExp(`^${PROBE_NETNS_PREFIX}(\\d+)-\\d+$`).exec(name);
    if (!match || Number(match[1]) === process.pid || (await processAlive(Number(match[1])))) continue;
    await ip(["netns", "delete", name]).catch(() => undefined);
  }
}

function ip(args: string[]) {
  return runCommand(["ip", ...args], { timeoutMs: 15_000, env: { ...process.env, PATH: pathWithSbin() } });
}
