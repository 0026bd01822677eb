/**
 * The nodes, for the operator (E2B's admin routes): GET /nodes, GET /nodes/{nodeID}, and POST
 * /nodes/{nodeID} {status: "ready" | "draining"}. A draining node takes no new sandboxes or
 * builds; the ones it has run on to their end. Guarded by `X-Admin-Token`; absent (404) when no
 * admin token is set. Static nodes (configured, never registered) are listed, always ready.
 */
import { createRoute, z } from "@hono/zod-openapi";
import type { APIContext } from "../context.js";
import { listNodes, type NodeRow, nodeAllocations, setNodeStatus } from "../db/nodes.js";
import { ConflictError, NodeNotFoundError } from "../errors.js";
import { requireAdminToken } from "../http/admin.js";
import type { App } from "../http/env.js";
import { errorJSON, jsonResponse } from "../http/schemas.js";
import type { NodeInfo } from "../nodes/info.js";
import { NodeIDParamsSchema, NodeViewSchema } from "../nodes/schemas.js";

type NodeView = z.infer<typeof NodeViewSchema>;

const listRoute = createRoute({
  method: "get",
  path: "/nodes",
  summary: "The nodes (admin)",
  tags: ["admin"],
  responses: {
    200: jsonResponse(z.array(NodeViewSchema), "Every node this API knows"),
    401: errorJSON("Missing or wrong X-Admin-Token"),
  },
});

const getRoute = createRoute({
  method: "get",
  path: "/nodes/{nodeID}",
  summary: "A node (admin)",
  tags: ["admin"],
  request: { params: NodeIDParamsSchema },
  responses: {
    200: jsonResponse(NodeViewSchema, "The node"),
    401: errorJSON("Missing or wrong X-Admin-Token"),
    404: errorJSON("No such node"),
  },
});

const setRoute = createRoute({
  method: "post",
  path: "/nodes/{nodeID}",
  summary: "Drain a node, or make it ready again (admin)",
  tags: ["admin"],
  request: {
    params: NodeIDParamsSchema,
    body: {
      content: {
        "application/json": {
          schema: z.strictObject({ status: z.enum(["ready", "draining"]) }).openapi("NodeStatusChange"),
        },
      },
      required: true,
    },
  },
  responses: {
    200: jsonResponse(NodeViewSchema, "The node with its new status"),
    400: errorJSON("Invalid body"),
    401: errorJSON("Missing or wrong X-Admin-Token"),
    404: errorJSON("No such node"),
    409: errorJSON("A static node, which has no status to change"),
  },
});

export function registerAdminNodes(app: App, ctx: APIContext): void {
  const adminToken = ctx.config.adminToken;
  if (!adminToken) return;
  app.openapi(listRoute, async (c) => {
    requireAdminToken(c, adminToken);
    return c.json(await nodeViews(ctx), 200);
  });
  app.openapi(getRoute, async (c) => {
    requireAdminToken(c, adminToken);
    const { nodeID } = c.req.valid("param");
    const view = (await nodeViews(ctx)).find((v) => v.nodeID === nodeID);
    if (!view) throw new NodeNotFoundError(nodeID);
    return c.json(view, 200);
  });
  app.openapi(setRoute, async (c) => {
    requireAdminToken(c, adminToken);
    const { nodeID } = c.req.valid("param");
    const { status } = c.req.valid("json");
    const row = await setNodeStatus(ctx.db, nodeID, status);
    if (!row) {
      if (ctx.nodes.has(nodeID)) {
        throw new ConflictError(
          `node '${nodeID}' is configured in the API and has never registered: only nodes that heartbeat (moat orchestrator --api-url) can be drained`,
        );
      }
      throw new NodeNotFoundError(nodeID);
    }
    // This process places by it at once; the others within a second (their registry reads it).
    const node = ctx.nodes.get(nodeID);
    if (node && node.info.status !== "unhealthy") node.info = { ...node.info, status };
    ctx.logger.info({ nodeID, status }, "node status set by the operator");
    const view = (await nodeViews(ctx)).find((v) => v.nodeID === nodeID) ?? rowView(row, undefined, 0);
    return c.json(view, 200);
  });
}

async function nodeViews(ctx: APIContext): Promise<NodeView[]> {
  const [{ rows, now }, allocations] = await Promise.all([listNodes(ctx.db), nodeAllocations(ctx.db)]);
  const views = new Map<string, NodeView>();
  for (const row of rows) {
    const info = ctx.nodes.get(row.id)?.info;
    const stale = now.getTime() - new Date(row.last_heartbeat).getTime() > ctx.config.nodeHeartbeatTimeoutMs;
    views.set(row.id, rowView(row, info, allocations.get(row.id)?.sandboxes ?? 0, stale));
  }
  for (const node of ctx.nodes.values()) {
    if (!views.has(node.id)) {
      views.set(node.id, staticView(node.id, node.info, allocations.get(node.id)?.sandboxes ?? 0));
    }
    // A node in this process (moat up) reports its load when asked; never fails the listing.
    const sampled = await node.sampleLoad?.().catch((err: unknown) => {
      ctx.logger.warn({ err, nodeID: node.id }, "could not read the local node's load");
      return undefined;
    });
    if (sampled) Object.assign(views.get(node.id)!, sampled);
  }
  return [...views.values()].sort((a, b) => a.nodeID.localeCompare(b.nodeID));
}

function rowView(row: NodeRow, info: NodeInfo | undefined, sandboxCount: number, stale = false): NodeView {
  return {
    nodeID: row.id,
    status: stale ? "unhealthy" : row.status === "unhealthy" ? "ready" : row.status,
    static: info?.static ?? false,
    rpcURL: row.rpc_url,
    proxyURL: row.proxy_url,
    version: row.version,
    runtime: row.runtime,
    labels: row.labels,
    capacity: row.capacity,
    load: row.load,
    builds: row.builds.length,
    sandboxCount,
    lastHeartbeat: new Date(row.last_heartbeat).toISOString(),
    firstSeen: new Date(row.first_seen).toISOString(),
  };
}

function staticView(id: string, info: NodeInfo, sandboxCount: number): NodeView {
  return {
    nodeID: id,
    status: info.status,
    static: true,
    rpcURL: info.rpcURL ?? null,
    proxyURL: info.proxyURL ?? null,
    version: null,
    runtime: null,
    labels: [...info.labels],
    capacity: null,
    load: null,
    builds: 0,
    sandboxCount,
    lastHeartbeat: null,
    firstSeen: null,
  };
}
