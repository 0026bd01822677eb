import { readFile } from "node:fs/promises";
import { setTimeout as sleep } from "node:timers/promises";

/**
 * Whether a process exists and is not a zombie. Read from /proc rather than `kill(pid, 0)`,
 * which calls a zombie alive (a child nobody reaped yet has exited all the same) and fails with
 * EPERM on other users' processes.
 */
export async function processAlive(pid: number): Promise<boolean> {
  if (!Number.isInteger(pid) || pid <= 0) return false;
  const stat = await readFile(`/proc/${pid}/stat`, "utf8").catch(() => "");
  // The state follows the command name in parentheses, which may itself hold ")" or spaces.
  const end = stat.lastIndexOf(")");
  const state = stat.slice(end + 2, end + 3);
  return state !== "" && state !== "Z" && state !== "X";
}

/** Resolves once `pid` is gone or a zombie, or after `timeoutMs`, whichever comes first. */
export async function waitForExit(pid: number, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline && (await processAlive(pid))) await sleep(10);
}
