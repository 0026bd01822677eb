/**
 * GET /sandboxes/{id}/metrics?start&end and GET /sandboxes/metrics?sandbox_ids=a,b (the latest
 * sample of each): the history its node keeps of each sandbox's resource usage (see
 * sandbox/metrics.ts), also for a sandbox killed within the node's retention. Another team's
 * sandbox reads as a missing one.
 */
import { createRoute, z } from "@hono/zod-openapi";
import type { APIContext } from "../context.js";
import { getTeamSandbox } from "../db/sandboxes.js";
import { SandboxNotFoundError } from "../errors.js";
import type { App } from "../http/env.js";
import {
  errorResponses,
  jsonResponse,
  notFoundResponse,
  SandboxesWithMetricsSchema,
  SandboxIDParamsSchema,
  SandboxMetricSchema,
} from "../http/schemas.js";
import { metricsRange, readSandboxMetrics, type SandboxMetric } from "../sandbox/metrics.js";
import { LIVE_STATES } from "../sandbox/states.js";
import { SECURITY } from "./shared.js";

/** Unix seconds up to 2^32 − 1 (the year 2106), as the node keeps them. */
export const UnixSeconds = z.coerce.number().int().min(0).max(0xffff_ffff);

/** States whose metrics can be read: every sandbox the team has or had. */
const READABLE = [...LIVE_STATES, "killed"] as const;

const one = createRoute({
  method: "get",
  path: "/sandboxes/{sandboxID}/metrics",
  summary: "Get a sandbox's metrics",
  tags: ["sandboxes"],
  security: SECURITY,
  request: {
    params: SandboxIDParamsSchema,
    query: z.object({
      start: UnixSeconds.optional().openapi({
        description: "Unix seconds (default: the sandbox's creation)",
      }),
      end: UnixSeconds.optional().openapi({ description: "Unix seconds (default: now)" }),
    }),
  },
  responses: {
    200: jsonResponse(z.array(SandboxMetricSchema), "Samples, oldest first"),
    ...errorResponses,
    ...notFoundResponse,
  },
});

const many = createRoute({
  method: "get",
  path: "/sandboxes/metrics",
  summary: "Get the latest metrics of several sandboxes",
  tags: ["sandboxes"],
  security: SECURITY,
  request: {
    query: z.object({
      sandbox_ids: z.string().min(1).openapi({ description: "Comma-separated sandbox ids (at most 100)" }),
    }),
  },
  responses: {
    200: jsonResponse(SandboxesWithMetricsSchema, "Latest sample per sandbox"),
    ...errorResponses,
  },
});

const MAX_IDS = 100;

/** Registers the multi-sandbox route too; it must come before GET /sandboxes/{sandboxID}. */
export function registerSandboxMetrics(app: App, ctx: APIContext): void {
  app.openapi(many, async (c) => {
    const teamID = c.get("caller").team.team_id;
    const ids = [
      ...new Set(
        c.req
          .valid("query")
          .sandbox_ids.split(",")
          .map((s) => s.trim())
          .filter(Boolean),
      ),
    ];
    if (ids.length > MAX_IDS) {
      return c.json(
        { code: 400, message: `sandbox_ids: at most ${MAX_IDS} ids`, requestId: c.get("requestId") },
        400,
      );
    }
    const readings = await Promise.all(
      ids.map(async (id) => {
        const row = await getTeamSandbox(ctx.db, teamID, id, READABLE);
        // One sandbox whose node does not answer leaves it out, not the others.
        const latest = row ? await readSandboxMetrics(ctx, row, { latest: true }).catch(() => []) : [];
        return [id, latest[0]] as const;
      }),
    );
    const sandboxes: Record<string, SandboxMetric> = {};
    for (const [id, metric] of readings) if (metric) sandboxes[id] = metric;
    return c.json({ sandboxes }, 200);
  });
  app.openapi(one, async (c) => {
    const { sandboxID } = c.req.valid("param");
    const row = await getTeamSandbox(ctx.db, c.get("caller").team.team_id, sandboxID, READABLE);
    if (!row) throw new SandboxNotFoundError(sandboxID);
    const range = metricsRange(c.req.valid("query"), Math.floor(row.created_at.getTime() / 1000));
    return c.json(await readSandboxMetrics(ctx, row, range), 200);
  });
}
