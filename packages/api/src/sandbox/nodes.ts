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
 * The proxy URL of a node, for the routing catalog: a static node's configured one, or what the
 * node last reported. Undefined for an unknown node or one without a proxy.
 */
export function nodeProxyURL(nodes: ReadonlyMap<string, NodeClient>, nodeID: string): string | undefined {
  return nodes.get(nodeID)?.proxyURL;
}
