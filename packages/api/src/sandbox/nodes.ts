import type { APIContext } from "../context.js";
import type { SandboxRow } from "../db/schema.js";
import type { NodeClient } from "../orchestrator/node-client.js";
import { NodeUnavailableError } from "../orchestrator/node-client.js";

/** The client of the node a sandbox was placed on. */
export function nodeOf(ctx: APIContext, row: Pick<SandboxRow, "node_id">): NodeClient {
  const node = ctx.nodes.get(row.node_id);
  if (!node) throw new NodeUnavailableError(row.node_id, "the node is not configured in this API");
  return node;
}

/**
 * Whether the node is out of service by its registry's word (missed heartbeats, or drained): a
 * paused sandbox it published resumes elsewhere instead. Static nodes stay ready and are judged by
 * their calls alone.
 */
export function nodeGone(node: NodeClient): boolean {
  return node.info.status === "unhealthy" || node.info.status === "draining";
}

/**
 * The proxy URL of a node, for the routing catalog: a static node's configured one, or what the
 * node last reported. Undefined for an unknown node or one without a proxy.
 */
export function nodeProxyURL(nodes: ReadonlyMap<string, NodeClient>, nodeID: string): string | undefined {
  return nodes.get(nodeID)?.proxyURL;
}
