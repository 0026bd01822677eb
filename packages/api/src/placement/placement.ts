/**
 * Placement: which node a new sandbox (or template build) goes to. A strategy sees the nodes that
 * may take it (ready, not already tried for this create, with the labels it needs) and picks one.
 * The default is best-of-K (score.ts): K nodes sampled, the least loaded wins. With one node, or
 * nodes that report nothing and carry equal loads, it takes them in turn (round-robin).
 */

import type { NodeInfo } from "../nodes/info.js";
import { takesPlacements } from "../nodes/info.js";
import { type PlacementRequest, scoreNode } from "./score.js";

export type { PlacementRequest } from "./score.js";

/** What placement knows of a node. */
export interface PlacementNode {
  readonly id: string;
  readonly info?: NodeInfo;
}

export interface PlacementStrategy {
  /** One of `candidates` (never empty), or undefined to refuse them all. */
  choose<N extends PlacementNode>(candidates: readonly N[], request?: PlacementRequest): N | undefined;
  /**
   * The create `request` placed on `nodeID` ended: `started`, its load shows in the records soon
   * (and is counted here until then), or failed (no longer counted).
   */
  finished?(nodeID: string, request: PlacementRequest, started: boolean): void;
}

export class RoundRobinPlacement implements PlacementStrategy {
  private next = 0;

  choose<N extends PlacementNode>(candidates: readonly N[]): N | undefined {
    if (candidates.length === 0) return undefined;
    const node = candidates[this.next % candidates.length];
    this.next = (this.next + 1) % 1_000_000;
    return node;
  }
}

/** How many nodes best-of-K samples (E2B's API samples 3). */
export const PLACEMENT_SAMPLE = 3;
/** Placements counted beside the records no longer than this after their create ended… */
const PENDING_MAX_MS = 30_000;
/** …or after they were made (a create that never said it ended). */
const PLACED_MAX_MS = 5 * 60_000;

interface Pending {
  nodeID: string;
  request: PlacementRequest;
  placedAt: number;
  /** When the create ended (started); undefined while under way. */
  finishedAt?: number;
}

/**
 * Best-of-K over the nodes' load: K of the candidates at random, each scored (score.ts), the
 * lowest wins; ties go round-robin. The placements this process made whose sandboxes the records
 * do not count yet (creates under way, or finished since the last read) are added to each node's
 * allocation, so that a burst of creates spreads instead of piling onto the node that looked
 * emptiest.
 */
export class BestOfKPlacement implements PlacementStrategy {
  private next = 0;
  private pending: Pending[] = [];

  constructor(
    private readonly k = PLACEMENT_SAMPLE,
    private readonly random: () => number = Math.random,
    private readonly now: () => number = Date.now,
  ) {}

  choose<N extends PlacementNode>(candidates: readonly N[], request?: PlacementRequest): N | undefined {
    if (candidates.length === 0) return undefined;
    const req = request ?? { cpuCount: 1, memoryMB: 512 };
    this.expire(candidates);
    const sample = this.sample(candidates);
    const scored = sample.map((node) => ({
      node,
      score: scoreNode(node.info, req, this.pendingOn(node.id)),
    }));
    const best = Math.min(...scored.map((s) => s.score));
    const ties = scored.filter((s) => s.score - best < 1e-9);
    const chosen = ties[this.next % ties.length]!.node;
    this.next = (this.next + 1) % 1_000_000;
    if (request) this.pending.push({ nodeID: chosen.id, request, placedAt: this.now() });
    return chosen;
  }

  finished(nodeID: string, request: PlacementRequest, started: boolean): void {
    const index = this.pending.findIndex((p) => p.nodeID === nodeID && p.request === request);
    if (index < 0) return;
    if (started) this.pending[index]!.finishedAt = this.now();
    else this.pending.splice(index, 1);
  }

  /** K candidates at random, in their order; all of them when there are no more than K. */
  private sample<N>(candidates: readonly N[]): N[] {
    if (candidates.length <= this.k) return [...candidates];
    const picked = new Set<number>();
    while (picked.size < this.k) picked.add(Math.floor(this.random() * candidates.length));
    return [...picked].sort((a, b) => a - b).map((i) => candidates[i]!);
  }

  private pendingOn(nodeID: string): { cpus: number; memoryMB: number; sandboxes: number } {
    const sum = { cpus: 0, memoryMB: 0, sandboxes: 0 };
    for (const p of this.pending) {
      if (p.nodeID !== nodeID) continue;
      sum.cpus += p.request.cpuCount;
      sum.memoryMB += p.request.memoryMB;
      sum.sandboxes++;
    }
    return sum;
  }

  /** Drops placements the records count by now (read after the create ended), and old ones. */
  private expire(nodes: readonly PlacementNode[]): void {
    const readAt = new Map(nodes.map((n) => [n.id, n.info?.allocatedAt?.getTime()]));
    const now = this.now();
    this.pending = this.pending.filter((p) => {
      if (p.finishedAt === undefined) return now - p.placedAt < PLACED_MAX_MS;
      const read = readAt.get(p.nodeID);
      if (read !== undefined && read > p.finishedAt) return false;
      return now - p.finishedAt < PENDING_MAX_MS;
    });
  }
}

/** How many nodes a create tries before it gives up (E2B's API tries 3). */
export const MAX_PLACEMENT_ATTEMPTS = 3;

/**
 * Picks a node for an attempt of a create, leaving out the nodes already tried by it, those not
 * ready (draining, unhealthy) and those without the labels it needs; undefined when none is left.
 */
export function placeSandbox<N extends PlacementNode>(
  strategy: PlacementStrategy,
  nodes: readonly N[],
  tried: ReadonlySet<string>,
  request?: PlacementRequest,
): N | undefined {
  const candidates = eligibleNodes(nodes, tried, request?.labels ?? []);
  return candidates.length > 0 ? strategy.choose(candidates, request) : undefined;
}

/** The label of nodes meant for template builds: builds go to them when any is ready. */
export const BUILD_LABEL = "build";

/** Where a template build may go: the ready nodes labelled `build`, else every node. */
export function buildNodes<N extends PlacementNode>(nodes: readonly N[]): readonly N[] {
  const builders = eligibleNodes(nodes, new Set(), [BUILD_LABEL]);
  return builders.length > 0 ? builders : nodes;
}

/** Ready nodes not tried yet that carry every label in `labels`. */
export function eligibleNodes<N extends PlacementNode>(
  nodes: readonly N[],
  tried: ReadonlySet<string>,
  labels: readonly string[],
): N[] {
  return nodes.filter(
    (n) =>
      !tried.has(n.id) &&
      (!n.info || takesPlacements(n.info)) &&
      labels.every((label) => n.info?.labels.includes(label)),
  );
}
