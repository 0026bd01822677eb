/** The heartbeat a node sends (PUT /internal/nodes/{nodeID}) and the node view of the admin routes. */
import { z } from "@hono/zod-openapi";
import { MAX_HEARTBEAT_BUILDS } from "@moat/shared";

/** As OrchestratorNodeOptions.id: what node ids may be. */
export const NODE_ID = /^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/;
const LABEL = /^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/;
/** Template build ids a heartbeat may list. */
export const MAX_BUILDS = MAX_HEARTBEAT_BUILDS;

const httpURL = z
  .url({ protocol: /^https?$/, error: "must be an http:// or https:// URL" })
  .max(2048)
  .refine((url) => !/[?#]/.test(url), { message: "must not have a query or fragment" });
const count = z.number().int().min(0).max(1_000_000_000);

export const NodeIDParamsSchema = z.object({
  nodeID: z
    .string()
    .regex(NODE_ID, "nodeID must be 1-63 letters, digits, '.', '_' or '-'")
    .openapi({ param: { name: "nodeID", in: "path" } }),
});

export const NodeHeartbeatSchema = z
  .object({
    rpcURL: httpURL,
    proxyURL: httpURL,
    version: z.string().max(128),
    runtime: z.string().max(256),
    labels: z.array(z.string().regex(LABEL, "labels are 1-63 letters, digits, '.', '_' or '-'")).max(64),
    capacity: z.object({ cpus: z.number().int().min(1).max(100_000), memoryMB: count.min(1) }),
    load: z.object({
      cpuPercent: z.number().min(0).max(100),
      memoryUsedMB: count,
      sandboxes: count,
      starting: count,
      poolReady: count,
    }),
    builds: z.array(z.string().min(1).max(256)).max(MAX_BUILDS, `builds: at most ${MAX_BUILDS} build ids`),
  })
  .openapi("NodeHeartbeat");

export const NodeViewSchema = z
  .object({
    nodeID: z.string(),
    status: z.enum(["ready", "draining", "unhealthy"]),
    /** Configured in the API rather than registered. */
    static: z.boolean(),
    rpcURL: z.string().nullable(),
    proxyURL: z.string().nullable(),
    version: z.string().nullable(),
    runtime: z.string().nullable(),
    labels: z.array(z.string()),
    capacity: z.object({ cpus: z.number(), memoryMB: z.number() }).nullable(),
    load: z
      .object({
        cpuPercent: z.number(),
        memoryUsedMB: z.number(),
        sandboxes: z.number(),
        starting: z.number(),
        poolReady: z.number(),
      })
      .nullable(),
    /** How many template builds the node holds locally. */
    builds: z.number(),
    /** Live sandboxes the records place on it (not paused). */
    sandboxCount: z.number(),
    lastHeartbeat: z.string().nullable(),
    firstSeen: z.string().nullable(),
  })
  .openapi("Node");
