/**
 * A sandbox's resource usage, read from its envd's /metrics on the node's host address (the API
 * runs on the node in `moat up`). One reading per call: there is no history yet, so a request
 * for a time range answers the current reading when "now" is in it, and nothing otherwise.
 */
import { ENVD_PORT } from "@moat/shared";
import type { SandboxRow } from "../db/schema.js";

export interface SandboxMetric {
  timestamp: string;
  timestampUnix: number;
  cpuCount: number;
  cpuUsedPct: number;
  memUsed: number;
  memTotal: number;
  memCache: number;
  diskUsed: number;
  diskTotal: number;
}

/** envd's /metrics body (snake_case, as E2B's envd). */
interface EnvdMetrics {
  ts?: number;
  cpu_count?: number;
  cpu_used_pct?: number;
  mem_total?: number;
  mem_used?: number;
  mem_cache?: number;
  disk_used?: number;
  disk_total?: number;
}

const READ_TIMEOUT_MS = 2_000;

/** The current reading, or undefined when envd cannot be reached or answers nonsense. */
export async function readSandboxMetric(
  row: Pick<SandboxRow, "host_address" | "envd_access_token">,
): Promise<SandboxMetric | undefined> {
  if (!row.host_address) return undefined;
  try {
    const res = await fetch(`http://${row.host_address}:${ENVD_PORT}/metrics`, {
      headers: row.envd_access_token ? { "X-Access-Token": row.envd_access_token } : {},
      signal: AbortSignal.timeout(READ_TIMEOUT_MS),
    });
    if (!res.ok) {
      await res.body?.cancel();
      return undefined;
    }
    const m = (await res.json()) as EnvdMetrics;
    const ts = typeof m.ts === "number" ? m.ts : Math.floor(Date.now() / 1000);
    return {
      timestamp: new Date(ts * 1000).toISOString(),
      timestampUnix: ts,
      cpuCount: num(m.cpu_count),
      cpuUsedPct: num(m.cpu_used_pct),
      memUsed: num(m.mem_used),
      memTotal: num(m.mem_total),
      memCache: num(m.mem_cache),
      diskUsed: num(m.disk_used),
      diskTotal: num(m.disk_total),
    };
  } catch {
    return undefined;
  }
}

function num(value: unknown): number {
  return typeof value === "number" && Number.isFinite(value) ? value : 0;
}
