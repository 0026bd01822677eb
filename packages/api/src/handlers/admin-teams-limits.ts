/**
 * GET and PATCH /admin/teams/{teamID}: a team's limits as they apply (the operator's defaults with
 * the team's overrides) and its overrides; PATCH sets overrides (a number) or removes them (null),
 * leaving the others. Guarded by `X-Admin-Token`; absent (404) when no admin token is set. Changes
 * apply to the team's next requests; nothing running is stopped.
 */
import { createRoute, z } from "@hono/zod-openapi";
import type { APIContext } from "../context.js";
import type { TeamRow } from "../db/schema.js";
import { getTeam, setTeamLimits } from "../db/teams.js";
import { InvalidRequestError, TeamNotFoundError } from "../errors.js";
import { requireAdminToken } from "../http/admin.js";
import type { App } from "../http/env.js";
import { errorJSON, jsonResponse } from "../http/schemas.js";
import { applyLimitPatch, TeamLimitPatchSchema, teamLimits } from "../quotas/limits.js";
import { withTeamLock } from "../quotas/reserve.js";
import { EffectiveLimitsSchema, TeamLimitsOverrideSchema } from "./admin-teams-create.js";

const TeamParamsSchema = z.object({
  teamID: z
    .string()
    .min(1)
    .max(64)
    .openapi({ param: { name: "teamID", in: "path" } }),
});

const AdminTeamSchema = z
  .object({
    teamID: z.string(),
    name: z.string(),
    limits: EffectiveLimitsSchema,
    overrides: TeamLimitsOverrideSchema,
  })
  .openapi("AdminTeam");

const responses = {
  200: jsonResponse(AdminTeamSchema, "The team's limits (as they apply) and its overrides"),
  400: errorJSON("Invalid body"),
  401: errorJSON("Missing or wrong X-Admin-Token"),
  404: errorJSON("No such team"),
};

const getRoute = createRoute({
  method: "get",
  path: "/admin/teams/{teamID}",
  summary: "A team's limits (admin)",
  tags: ["admin"],
  request: { params: TeamParamsSchema },
  responses,
});

const patchRoute = createRoute({
  method: "patch",
  path: "/admin/teams/{teamID}",
  summary: "Set or remove a team's limits (admin)",
  tags: ["admin"],
  request: {
    params: TeamParamsSchema,
    body: {
      content: {
        "application/json": {
          schema: z
            .strictObject({ limits: TeamLimitPatchSchema.openapi("TeamLimitPatch") })
            .openapi("TeamPatch"),
        },
      },
      required: true,
    },
  },
  responses,
});

export function registerAdminTeamsLimits(app: App, ctx: APIContext): void {
  const adminToken = ctx.config.adminToken;
  if (!adminToken) return;
  const view = (team: TeamRow) => ({
    teamID: team.team_id,
    name: team.name,
    limits: teamLimits(ctx.config.quotas, team),
    overrides: team.limits,
  });
  app.openapi(getRoute, async (c) => {
    requireAdminToken(c, adminToken);
    const { teamID } = c.req.valid("param");
    const team = await getTeam(ctx.db, teamID);
    if (!team) throw new TeamNotFoundError(teamID);
    return c.json(view(team), 200);
  });
  app.openapi(patchRoute, async (c) => {
    requireAdminToken(c, adminToken);
    const { teamID } = c.req.valid("param");
    if (!(await getTeam(ctx.db, teamID))) throw new TeamNotFoundError(teamID);
    const { limits: patch } = c.req.valid("json");
    if (Object.keys(patch).length === 0)
      throw new InvalidRequestError("limits: name at least one limit to set or remove");
    // Under the team's lock: a patch never lands in the middle of a quota check.
    const team = await withTeamLock(ctx, teamID, (tx, current) =>
      setTeamLimits(tx, teamID, applyLimitPatch(current.limits, patch)),
    );
    return c.json(view(team!), 200);
  });
}
