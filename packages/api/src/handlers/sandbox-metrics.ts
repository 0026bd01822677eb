/**
 * GET /sandboxes/{id}/metrics and GET /sandboxes/metrics?sandbox_ids=a,b: resource usage read
 * from the sandboxes' envd (see sandbox/metrics.ts). A sandbox whose envd does not answer has no
 * reading (an empty list, or no key in the map).
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
import { readSandboxMetric, type SandboxMetric } from "../sandbox/metrics.js";
import { VISIBLE_STATES } from "../sandbox/states.js";
import { SECURITY } from "./shared.js";

const UnixSeconds = z.coerce.number().int().min(0);

const one = createRoute({
  method: "get",
  path: "/sandboxes/{sandboxID}/metrics",
  summary: "Get a sandbox's metrics",
  tags: ["sandboxes"],
  security: SECURITY,
  request: {
    params: SandboxIDParamsSchema,
    query: z.object({
      start: UnixSeconds.optional().openapi({ description: "Unix seconds" }),
      end: UnixSeconds.optional().openapi({ description: "Unix seconds" }),
    }),
  },
  responses: {
    200: jsonResponse(z.array(SandboxMetricSchema), "Readings"),
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
    200: jsonResponse(SandboxesWithMetricsSchema, "Latest reading per sandbox"),
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
        const row = await getTeamSandbox(ctx.db, teamID, id, ["running"]);
        return [id, row ? await readSandboxMetric(row) : undefined] as const;
      }),
    );
    const sandboxes: Record<string, SandboxMetric> = {};
    for (const [id, metric] of readings) if (metric) sandboxes[id] = metric;
    return c.json({ sandboxes }, 200);
  });
  app.openapi(one, async (c) => {
    const { sandboxID } = c.req.valid("param");
    const { start, end } = c.req.valid("query");
    const row = await getTeamSandbox(ctx.db, c.get("caller").team.team_id, sandboxID, VISIBLE_STATES);
    if (!row) throw new SandboxNotFoundError(sandboxID);
    const metric = row.state === "running" ? await readSandboxMetric(row) : undefined;
    const inRange =
      metric !== undefined &&
      (start === undefined || metric.timestampUnix >= start) &&
      (end === undefined || metric.timestampUnix <= end);
    return c.json(inRange ? [metric] : [], 200);
  });
}
