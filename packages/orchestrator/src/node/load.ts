/**
 * What a node reports of itself in its heartbeat: capacity (CPUs, memory) and load (CPU busy
 * since the last sample, memory in use, from /proc; sandboxes running and starting, warm pool
 * entries ready, from the manager). The /proc parsers are pure, so tests feed them text.
 */
import { readFile } from "node:fs/promises";
import os from "node:os";

import type { NodeCapacity, NodeLoad } from "@moat/shared";

export type { NodeCapacity, NodeLoad };

/** The counts the manager knows (sandbox/manager.ts `loadCounts`). */
export interface ManagerCounts {
  sandboxes: number;
  starting: number;
  poolReady: number;
}

export interface CPUTimes {
  busy: number;
  total: number;
}

/** The aggregate `cpu` line of /proc/stat: busy and total jiffies (iowait and idle are not busy). */
export function parseProcStat(text: string): CPUTimes | undefined {
  const line = text.split("\n").find((l) => /^cpu\s/.test(l));
  if (!line) return undefined;
  const fields = line.trim().split(/\s+/).slice(1).map(Number);
  if (fields.length < 4 || fields.some((n) => !Number.isFinite(n))) return undefined;
  // user nice system idle iowait irq softirq steal (guest time is inside user already)
  const [user = 0, nice = 0, system = 0, idle = 0, iowait = 0, irq = 0, softirq = 0, steal = 0] = fields;
  const busy = user + nice + system + irq + softirq + steal;
  return { busy, total: busy + idle + iowait };
}

/** MemTotal and MemTotal − MemAvailable of /proc/meminfo, in MiB. */
export function parseMeminfo(text: string): { totalMB: number; usedMB: number } | undefined {
  const kb = (name: string) => {
    const match = new RegExp(`^${name}:\\s+(\\d+)\\s*kB`, "m").exec(text);
    return match ? Number(match[1]) : undefined;
  };
  const total = kb("MemTotal");
  const available = kb("MemAvailable");
  if (total === undefined || available === undefined) return undefined;
  return { totalMB: Math.floor(total / 1024), usedMB: Math.max(0, Math.floor((total - available) / 1024)) };
}

/** CPU percent between two samples (0-100); 0 when no time passed. */
export function cpuPercent(before: CPUTimes | undefined, after: CPUTimes | undefined): number {
  if (!before || !after) return 0;
  const total = after.total - before.total;
  if (total <= 0) return 0;
  return Math.min(100, Math.max(0, ((after.busy - before.busy) / total) * 100));
}

/** Samples the host; each call reports the CPU busy since the previous one. */
export class LoadSampler {
  private previous: CPUTimes | undefined;

  constructor(private readonly proc = "/proc") {}

  async sample(counts: ManagerCounts): Promise<{ capacity: NodeCapacity; load: NodeLoad }> {
    const [stat, meminfo] = await Promise.all([
      readFile(`${this.proc}/stat`, "utf8").catch(() => ""),
      readFile(`${this.proc}/meminfo`, "utf8").catch(() => ""),
    ]);
    const times = parseProcStat(stat);
    const percent = cpuPercent(this.previous, times);
    this.previous = times ?? this.previous;
    const memory = parseMeminfo(meminfo) ?? {
      totalMB: Math.floor(os.totalmem() / 1024 ** 2),
      usedMB: Math.floor((os.totalmem() - os.freemem()) / 1024 ** 2),
    };
    return {
      capacity: { cpus: os.availableParallelism(), memoryMB: Math.max(1, memory.totalMB) },
      load: {
        cpuPercent: Math.round(percent * 10) / 10,
        memoryUsedMB: memory.usedMB,
        sandboxes: counts.sandboxes,
        starting: counts.starting,
        poolReady: counts.poolReady,
      },
    };
  }
}
