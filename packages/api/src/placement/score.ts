/**
 * The load score of a node for a placement, as E2B's best-of-K scores nodes: lower is better.
 * CPU: (requested + allocated vCPUs + half the CPU in use) over R times the node's CPUs (R = 4:
 * vCPUs are overcommitted, a sandbox rarely uses all of its own). Memory: requested + allocated
 * over the node's memory. The number of sandboxes weighs a little (each costs the node some fixed
 * work). A node that holds the template's build locally gets a bonus (no fetch from shared
 * storage), more when its warm pool has entries ready. Pure: nodes that report nothing (static
 * nodes without heartbeats) are scored by what the records place on them alone.
 */
import type { NodeAllocation, NodeInfo } from "../nodes/info.js";

export interface PlacementRequest {
  cpuCount: number;
  memoryMB: number;
  /** The template build the sandbox starts from, when it has one. */
  buildID?: string;
  /** Labels a node must carry (e.g. `build`). */
  labels?: readonly string[];
}

/** vCPU overcommit. */
export const CPU_RATIO = 4;
/** What a node that reports nothing is taken to have. */
const DEFAULT_CPUS = 4;
/** Weight of one sandbox, per CPU of the node (R·cpus sandboxes weigh as much as a full node). */
const SANDBOX_WEIGHT = 0.25;
/** Bonus when the node has the template's build locally, and more when its pool has entries ready. */
export const CACHED_BONUS = 0.2;
export const POOL_BONUS = 0.05;

export function scoreNode(
  info: NodeInfo | undefined,
  request: PlacementRequest,
  pending: NodeAllocation = { cpus: 0, memoryMB: 0, sandboxes: 0 },
): number {
  const cpus = info?.capacity?.cpus || DEFAULT_CPUS;
  const allocated = info?.allocated ?? { cpus: 0, memoryMB: 0, sandboxes: 0 };
  const usedCores = ((info?.load?.cpuPercent ?? 0) / 100) * cpus;
  let score =
    (request.cpuCount + allocated.cpus + pending.cpus + 0.5 * usedCores) / (CPU_RATIO * cpus) +
    (SANDBOX_WEIGHT * (allocated.sandboxes + pending.sandboxes)) / (CPU_RATIO * cpus);
  const memoryMB = info?.capacity?.memoryMB;
  if (memoryMB) score += (request.memoryMB + allocated.memoryMB + pending.memoryMB) / memoryMB;
  if (request.buildID !== undefined && info?.builds.has(request.buildID)) {
    score -= CACHED_BONUS;
    if ((info.load?.poolReady ?? 0) > 0) score -= POOL_BONUS;
  }
  return score;
}
