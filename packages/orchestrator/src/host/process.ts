import { readdir, readFile } from "node:fs/promises";
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

/**
 * Resolves once `pid` is gone or a zombie, or after `timeoutMs`, whichever comes first; asks every
 * `intervalMs`.
 */
export async function waitForExit(pid: number, timeoutMs: number, intervalMs = 10): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline && (await processAlive(pid))) await sleep(intervalMs);
}

/**
 * SIGKILLs `pid` when its command line holds `mark` (a container id): the pid of a process that
 * exited may have been given to another since. Answers whether it sent the signal.
 */
export async function killOwnedProcess(pid: number, mark: string): Promise<boolean> {
  if (!Number.isInteger(pid) || pid <= 0 || !mark) return false;
  const cmdline = await readFile(`/proc/${pid}/cmdline`, "utf8").catch(() => "");
  if (!cmdline.split("\0").includes(mark)) return false;
  try {
    process.kill(pid, "SIGKILL");
    return true;
  } catch {
    // Exited in between.
    return false;
  }
}

/** The children of every thread of `pid` (none when it is gone or the kernel does not list them). */
export async function childrenOf(pid: number): Promise<number[]> {
  const tasks = await readdir(`/proc/${pid}/task`).catch(() => [] as string[]);
  const lists = await Promise.all(
    tasks.map((task) => readFile(`/proc/${pid}/task/${task}/children`, "utf8").catch(() => "")),
  );
  return lists.flatMap((list) => list.split(" ").filter(Boolean).map(Number));
}
