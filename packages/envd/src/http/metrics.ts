import { readFileSync } from "node:fs";
import { statfs } from "node:fs/promises";
import os from "node:os";
import type { Handler } from "hono";
import type { HTTPEnv } from "./bindings.js";

export interface Metrics {
  ts: number;
  cpu_count: number;
  cpu_used_pct: number;
  mem_total: number;
  mem_used: number;
  mem_cache: number;
  mem_total_mib: number;
  mem_used_mib: number;
  disk_used: number;
  disk_total: number;
}

interface CPUSample {
  busy: number;
  total: number;
}

const MIB = 1024 * 1024;

/**
 * GET /metrics: CPU, memory and root-disk usage of the sandbox. CPU usage is measured between two
 * calls (the first call against envd's start), as envd does with gopsutil's `cpu.Percent(0)`.
 */
export function metrics(): Handler<HTTPEnv> {
  let last = cpuSample();
  return async (c) => {
    const now = cpuSample();
    const total = now.total - last.total;
    const busy = now.busy - last.busy;
    last = now;
    const cpuUsedPct = total > 0 ? Math.round((busy / total) * 10000) / 100 : 0;
    const mem = memory();
    const disk = await statfs("/").catch(() => undefined);
    const body: Metrics = {
      ts: Math.floor(Date.now() / 1000),
      cpu_count: os.availableParallelism(),
      cpu_used_pct: cpuUsedPct,
      mem_total: mem.total,
      mem_used: mem.used,
      mem_cache: mem.cache,
      mem_total_mib: Math.floor(mem.total / MIB),
      mem_used_mib: Math.floor(mem.used / MIB),
      disk_used: disk ? (disk.blocks - disk.bfree) * disk.bsize : 0,
      disk_total: disk ? disk.blocks * disk.bsize : 0,
    };
    return c.json(body);
  };
}

/** Aggregate CPU jiffies from /proc/stat; busy excludes idle and iowait. */
function cpuSample(): CPUSample {
  try {
    const line = readFileSync("/proc/stat", "utf8").split("\n", 1)[0] ?? "";
    const fields = line.trim().split(/\s+/).slice(1, 9).map(Number);
    const total = fields.reduce((a, b) => a + b, 0);
    const idle = (fields[3] ?? 0) + (fields[4] ?? 0);
    return { busy: total - idle, total };
  } catch {
    return { busy: 0, total: 0 };
  }
}

/** Memory in bytes, from /proc/meminfo as gopsutil computes it (used excludes buffers and cache). */
function memory(): { total: number; used: number; cache: number } {
  let info: Map<string, number>;
  try {
    info = new Map(
      readFileSync("/proc/meminfo", "utf8")
        .split("\n")
        .map((line) => /^(\S+):\s+(\d+)/.exec(line))
        .filter((m): m is RegExpExecArray => m !== null)
        .map((m) => [m[1]!, Number(m[2]) * 1024] as const),
    );
  } catch {
    const total = os.totalmem();
    return { total, used: total - os.freemem(), cache: 0 };
  }
  const total = info.get("MemTotal") ?? os.totalmem();
  const free = info.get("MemFree") ?? 0;
  const cache = (info.get("Cached") ?? 0) + (info.get("SReclaimable") ?? 0);
  let used = total - free - (info.get("Buffers") ?? 0) - cache;
  if (used < 0) used = total - free;
  return { total, used, cache };
}
