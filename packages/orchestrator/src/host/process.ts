import { readFile } from "node:fs/promises";

/** Whether a process exists and is not a zombie waiting to be reaped. */
export async function processAlive(pid: number): Promise<boolean> {
  const stat = await readFile(`/proc/${pid}/stat`, "utf8").catch(() => "");
  const state = stat.slice(stat.lastIndexOf(")") + 2, stat.lastIndexOf(")") + 3);
  return state !== "" && state !== "Z" && state !== "X";
}

/** Resolves once `pid` has exited (a zombie counts), or after `timeoutMs`. */
export async function waitForExit(pid: number, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline && (await processAlive(pid))) await new Promise((r) => setTimeout(r, 10));
}
