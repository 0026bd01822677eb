/**
 * CPU priority of a sandbox's host cgroup (the one runsc makes at /moat/<container id>). A warm
 * pool entry is restored and waits at a low share, so that the refill a claim starts does not
 * take the CPU from the sandbox just handed out (on a 2-core node it doubled the first command's
 * time); a claim raises it to the normal share.
 */
import { writeFile } from "node:fs/promises";

/** cgroup v1 cpu.shares (1024 is the default); runsc turns it into cpu.weight on cgroup v2. */
export const BACKGROUND_CPU_SHARES = 16;
const NORMAL_CPU_SHARES = 1024;
/** cgroup v2's default weight (what 1024 shares become). */
const NORMAL_CPU_WEIGHT = 100;

/** Gives the container's cgroup the normal CPU share again; false when there is no such cgroup. */
export async function raiseCpuPriority(containerID: string, root = "/sys/fs/cgroup"): Promise<boolean> {
  for (const [file, value] of [
    [`${root}/cpu/moat/${containerID}/cpu.shares`, NORMAL_CPU_SHARES],
    [`${root}/moat/${containerID}/cpu.weight`, NORMAL_CPU_WEIGHT],
  ] as const) {
    try {
      // r+: written, never created (a cgroup that is not there is ENOENT, not a new file).
      await writeFile(file, String(value), { flag: "r+" });
      return true;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "ENOENT") throw err;
    }
  }
  return false;
}
