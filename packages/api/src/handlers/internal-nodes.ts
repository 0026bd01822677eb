/**
 * PUT /internal/nodes/{nodeID}: a node's heartbeat, every 2 s; the first registers it. Guarded by
 * the component secret (`Authorization: Bearer <MOAT_NODE_TOKEN>`, compared in constant time),
 * checked before the body is read; without a node token configured the API takes no
 * registrations. A draining node stays draining; any other becomes ready. The node registry of
 * every API process picks the change up within a second.
 */
import { createRoute, z } from "@hono/zod-openapi";
import { secretsEqual } from "../auth/secrets.js";
import type { APIContext } from "../context.js";
import { recordHeartbeat } from "../db/nodes.js";
import { UnauthenticatedError } from "../errors.js";
import type { App } from "../http/env.js";
import { errorJSON, jsonResponse } from "../http/schemas.js";
import { NodeHeartbeatSchema, NodeIDParamsSchema } from "../nodes/schemas.js";

const route = createRoute({
  method: "put",
  path: "/internal/nodes/{nodeID}",
  summary: "A node's heartbeat (orchestrator)",
  tags: ["internal"],
  hide: true,
  request: {
    params: NodeIDParamsSchema,
    body: { content: { "application/json": { schema: NodeHeartbeatSchema } }, required: true },
  },
  responses: {
    200: jsonResponse(z.object({ status: z.enum(["ready", "draining", "unhealthy"]) }), "Recorded"),
    400: errorJSON("Invalid heartbeat"),
    401: errorJSON("Missing or wrong node token"),
  },
});

export function registerInternalNodes(app: App, ctx: APIContext): void {
  const token = ctx.config.nodeToken;
  app.use("/internal/nodes/*", async (c, next) => {
    if (token === undefined) {
      throw new UnauthenticatedError(
        "this API takes no node registrations: set MOAT_NODE_TOKEN on it (the same as on the nodes)",
      );
    }
    const presented = /^Bearer\s+(\S+)\s*$/i.exec(c.req.header("authorization") ?? "")?.[1];
    if (!secretsEqual(token, presented)) {
      throw new UnauthenticatedError(
        "missing or wrong node token: send Authorization: Bearer <MOAT_NODE_TOKEN>, the same token the API has",
      );
    }
    await next();
  });
  app.openapi(route, async (c) => {
    const { nodeID } = c.req.valid("param");
    const row = await recordHeartbeat(ctx.db, nodeID, c.req.valid("json"));
    return c.json({ status: row.status }, 200);
  });
}
