/**
 * POST /admin/teams: creates a team with its first API key, for the operator of a moat (`moat up`
 * prints the admin token), optionally with its own limits (any of the operator's default quotas,
 * overridden for this team). Guarded by `X-Admin-Token`; absent (404) when no admin token is set.
 * The key is answered once and stored only as a hash.
 */
import { createRoute, z } from "@hono/zod-openapi";
import { createAPIKey, createTeam } from "../auth/teams.js";
import type { APIContext } from "../context.js";
import { requireAdminToken } from "../http/admin.js";
import type { App } from "../http/env.js";
import { errorJSON, jsonResponse } from "../http/schemas.js";
import { TeamLimitsSchema, teamLimits } from "../quotas/limits.js";

export const TeamLimitsOverrideSchema = TeamLimitsSchema.partial().openapi("TeamLimitOverrides", {
  description: "Limits of this team that differ from the operator's defaults",
});
export const EffectiveLimitsSchema = TeamLimitsSchema.openapi("TeamLimits");

const NewTeamSchema = z
  .strictObject({ name: z.string().min(1).max(256), limits: TeamLimitsOverrideSchema.optional() })
  .openapi("NewTeam");
const CreatedTeamSchema = z
  .object({ teamID: z.string(), name: z.string(), apiKey: z.string(), limits: EffectiveLimitsSchema })
  .openapi("CreatedTeam");

const route = createRoute({
  method: "post",
  path: "/admin/teams",
  summary: "Create a team and its first API key (admin)",
  tags: ["admin"],
  request: { body: { content: { "application/json": { schema: NewTeamSchema } }, required: true } },
  responses: {
    201: jsonResponse(CreatedTeamSchema, "The team, its limits and its API key (shown once)"),
    400: errorJSON("Invalid body"),
    401: errorJSON("Missing or wrong X-Admin-Token"),
  },
});

export function registerAdminTeamsCreate(app: App, ctx: APIContext): void {
  const adminToken = ctx.config.adminToken;
  if (!adminToken) return;
  app.openapi(route, async (c) => {
    requireAdminToken(c, adminToken);
    const { name, limits = {} } = c.req.valid("json");
    const { teamID } = await createTeam(ctx.db, name, limits);
    const apiKey = await createAPIKey(ctx.db, teamID);
    return c.json({ teamID, name, apiKey, limits: teamLimits(ctx.config.quotas, { limits }) }, 201);
  });
}
