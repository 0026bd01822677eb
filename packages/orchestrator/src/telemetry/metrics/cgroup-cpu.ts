/**
 * A sandbox's CPU time as its host cgroup counts it (the one runsc makes at /moat/<container id>,
 * runtime/oci-spec.ts). gVisor's /proc/stat inside the sandbox reads all zeros, so envd cannot
 * measure CPU use itself; the host's count is also beyond the sandbox's reach to fake.
 */
import { readFile } from "node:fs/promises";

const CONTAINER_ID = /^[A-Za-z0-9_.-]{1,128}$/;

/** CPU time used so far, in ns (cgroup v1 cpuacct.usage, or v2 cpu.stat usage_usec); undefined without a cgroup. */
export async function cgroupCpuNs(containerID: string, root = "/sys/fs/cgroup"): Promise<number | undefined> {
  if (!CONTAINER_ID.test(containerID)) return undefined;
  const v1 = await readFile(`${root}/cpuacct/moat/${containerID}/cpuacct.usage`, "utf8").catch(
    () => undefined,
  );
  if (v1 !== undefined) {
    const ns = Number(v1.trim());
    return Number.isFinite(ns) ? ns : undefined;
  }
  const v2 = await readFile(`${root}/moat/${containerID}/cpu.stat`, "utf8").catch(() => undefined);
  const usec = v2 && /^usage_usec (\d+)$/m.exec(v2)?.[1];
  return usec ? Number(usec) * 1000 : undefined;
}

/** Percent of `cpus` CPUs busy between two readings (0 to 100). */
export function cpuPercentBetween(
  before: { cpuNs: number; atNs: number },
  after: { cpuNs: number; atNs: number },
  cpus: number,
): number {
  const wall = (after.atNs - before.atNs) * Math.max(1, cpus);
  if (wall <= 0 || after.cpuNs < before.cpuNs) return 0;
  return Math.min(100, Math.round(((after.cpuNs - before.cpuNs) / wall) * 10_000) / 100);
}
