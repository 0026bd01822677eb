/**
 * A sandbox's resource usage over time: its node samples the sandbox's envd every few seconds and
 * keeps the samples for its retention, also after the sandbox ends (the node's
 * SandboxService.Metrics). Ranges are unix seconds, as E2B's API takes them; a long range is
 * averaged over wider steps, as E2B's is.
 */
import { timestampDate } from "@bufbuild/protobuf/wkt";
import type { SandboxMetricSample } from "@moat/shared/gen/orchestrator";
import type { APIContext } from "../context.js";
import type { SandboxRow } from "../db/schema.js";
import { InvalidRequestError, NodeUnreachableError } from "../errors.js";
import { NodeSandboxNotFoundError, NodeUnavailableError } from "../orchestrator/node-client.js";
import { nodeOf } from "./nodes.js";

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

/** E2B's steps for a range (its CalculateStep), in seconds; under an hour every sample is kept. */
export function stepFor(start: number, end: number): number {
  const span = end - start;
  if (span < 3600) return 0;
  if (span < 6 * 3600) return 30;
  if (span < 12 * 3600) return 60;
  if (span < 24 * 3600) return 120;
  if (span < 7 * 86_400) return 300;
  return 900;
}

/** The range of a request: E2B's defaults (from `defaultStart` to now), start after end refused. */
export function metricsRange(
  query: { start?: number; end?: number },
  defaultStart: number,
  now = Math.floor(Date.now() / 1000),
): { start: number; end: number } {
  const start = query.start ?? Math.min(defaultStart, query.end ?? now);
  const end = query.end ?? Math.max(now, start);
  if (start > end) {
    throw new InvalidRequestError(
      `start (${start}) is after end (${end}): give start ≤ end, in unix seconds`,
    );
  }
  return { start, end };
}

/**
 * The samples its node kept for the sandbox in the range. A sandbox that ended on a node no longer
 * there has none; a live sandbox's node that does not answer fails the request (503).
 */
export async function readSandboxMetrics(
  ctx: APIContext,
  row: Pick<SandboxRow, "sandbox_id" | "team_id" | "node_id" | "state">,
  query: { start?: number; end?: number; latest?: boolean },
): Promise<SandboxMetric[]> {
  try {
    const samples = await nodeOf(ctx, row).metrics({
      sandboxId: row.sandbox_id,
      teamId: row.team_id,
      start: query.start === undefined ? undefined : new Date(query.start * 1000),
      end: query.end === undefined ? undefined : new Date(query.end * 1000),
      stepSeconds: query.start !== undefined && query.end !== undefined ? stepFor(query.start, query.end) : 0,
      latest: query.latest ?? false,
    });
    return samples.map(toMetric);
  } catch (err) {
    if (err instanceof NodeSandboxNotFoundError) return [];
    if (err instanceof NodeUnavailableError) {
      if (row.state === "killed") return [];
      throw new NodeUnreachableError(
        `the metrics of sandbox '${row.sandbox_id}' are on node '${row.node_id}', which does not answer; try again shortly`,
      );
    }
    throw err;
  }
}

function toMetric(s: SandboxMetricSample): SandboxMetric {
  const time = s.time ? timestampDate(s.time) : new Date(0);
  return {
    timestamp: time.toISOString(),
    timestampUnix: Math.floor(time.getTime() / 1000),
    cpuCount: s.cpuCount,
    cpuUsedPct: s.cpuUsedPct,
    memUsed: Number(s.memUsed),
    memTotal: Number(s.memTotal),
    memCache: Number(s.memCache),
    diskUsed: Number(s.diskUsed),
    diskTotal: Number(s.diskTotal),
  };
}
