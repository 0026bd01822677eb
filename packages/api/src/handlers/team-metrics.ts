/**
 * GET /teams/{teamID}/metrics and GET /teams/{teamID}/metrics/max: the caller's own team's
 * concurrent sandboxes and start rate over time (sandbox/team-metrics.ts), with E2B's shapes and
 * defaults (the last 7 days). Another team's id is refused (403), as E2B's API does.
 */
import { createRoute, z } from "@hono/zod-openapi";
import type { APIContext } from "../context.js";
import { ForbiddenError, InvalidRequestError } from "../errors.js";
import type { App } from "../http/env.js";
import { errorJSON, errorResponses, jsonResponse } from "../http/schemas.js";
import { teamLives, teamMax, teamSeries } from "../sandbox/team-metrics.js";
import { UnixSeconds } from "./sandbox-metrics.js";
import { SECURITY } from "./shared.js";

const DEFAULT_RANGE_SECONDS = 7 * 86_400;

const TeamMetricSchema = z
  .object({
    timestamp: z.string().openapi({ format: "date-time" }),
    timestampUnix: z.number().int(),
    concurrentSandboxes: z.number().int(),
    sandboxStartRate: z.number(),
  })
  .openapi("TeamMetric");

const MaxTeamMetricSchema = z
  .object({
    timestamp: z.string().openapi({ format: "date-time" }),
    timestampUnix: z.number().int(),
    value: z.number(),
  })
  .openapi("MaxTeamMetric");

const params = z.object({ teamID: z.string().min(1).max(200) });
const range = {
  start: UnixSeconds.optional().openapi({ description: "Unix seconds (default: 7 days ago)" }),
  end: UnixSeconds.optional().openapi({ description: "Unix seconds (default: now)" }),
};
const forbidden = { 403: errorJSON("Another team's id") };

const series = createRoute({
  method: "get",
  path: "/teams/{teamID}/metrics",
  summary: "Get the team's concurrent sandboxes and start rate over time",
  tags: ["teams"],
  security: SECURITY,
  request: { params, query: z.object(range) },
  responses: {
    200: jsonResponse(z.array(TeamMetricSchema), "One point per step, oldest first"),
    ...errorResponses,
    ...forbidden,
  },
});

const max = createRoute({
  method: "get",
  path: "/teams/{teamID}/metrics/max",
  summary: "Get the highest value of a team metric in a range",
  tags: ["teams"],
  security: SECURITY,
  request: {
    params,
    query: z.object({ ...range, metric: z.enum(["concurrent_sandboxes", "sandbox_start_rate"]) }),
  },
  responses: {
    200: jsonResponse(MaxTeamMetricSchema, "The highest value and when"),
    ...errorResponses,
    ...forbidden,
  },
});

/** The range asked for, within E2B's defaults; the caller's own team only. */
function checked(
  teamID: string,
  callerTeamID: string,
  query: { start?: number; end?: number },
): { start: number; end: number } {
  if (teamID !== callerTeamID) {
    throw new ForbiddenError(`team '${teamID}' is not the team of your API key or access token`);
  }
  const now = Math.floor(Date.now() / 1000);
  const end = query.end ?? now;
  const start = query.start ?? Math.max(0, end - DEFAULT_RANGE_SECONDS);
  if (start > end) {
    throw new InvalidRequestError(
      `start (${start}) is after end (${end}): give start ≤ end, in unix seconds`,
    );
  }
  return { start, end };
}

export function registerTeamMetrics(app: App, ctx: APIContext): void {
  app.openapi(series, async (c) => {
    const { start, end } = checked(
      c.req.valid("param").teamID,
      c.get("caller").team.team_id,
      c.req.valid("query"),
    );
    const lives = await teamLives(ctx.db, c.get("caller").team.team_id, start, end);
    return c.json(teamSeries(lives, start, end), 200);
  });
  app.openapi(max, async (c) => {
    const query = c.req.valid("query");
    const { start, end } = checked(c.req.valid("param").teamID, c.get("caller").team.team_id, query);
    const lives = await teamLives(ctx.db, c.get("caller").team.team_id, start, end);
    return c.json(teamMax(teamSeries(lives, start, end), query.metric), 200);
  });
}
