/**
 * Placement: which node a new sandbox goes to. A strategy sees the nodes that may take it (those
 * not already tried for this create) and picks one. Round-robin spreads sandboxes evenly over
 * identical nodes; a best-of-K strategy scoring each node's load (protocol doc §6.3) fits the same
 * interface once nodes report their load.
 */

/** What placement knows of a node. */
export interface PlacementNode {
  readonly id: string;
}

export interface PlacementStrategy {
  /** One of `candidates` (never empty), or undefined to refuse them all. */
  choose<N extends PlacementNode>(candidates: readonly N[]): N | undefined;
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

/** How many nodes a create tries before it gives up (E2B's API tries 3). */
export const MAX_PLACEMENT_ATTEMPTS = 3;

/**
 * Picks a node for an attempt of a create, leaving out the nodes already tried by it; undefined
 * when none is left.
 */
export function placeSandbox<N extends PlacementNode>(
  strategy: PlacementStrategy,
  nodes: readonly N[],
  tried: ReadonlySet<string>,
): N | undefined {
  const candidates = nodes.filter((n) => !tried.has(n.id));
  return candidates.length > 0 ? strategy.choose(candidates) : undefined;
}
