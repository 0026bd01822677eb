/**
 * The operator's routes over every team (E2B's admin routes, and what `moat status` and `moat
 * teams list` read): the teams, an overview (sandboxes by state, builds in flight), running
 * sandboxes per team, killing a team's sandboxes, cancelling its builds, and making or revoking a
 * team's API keys (including its last one: the operator can always make another). Guarded by
 * `X-Admin-Token`; absent (404) when no admin token is set.
 */
import { createRoute, z } from "@hono/zod-openapi";
import { apiKeyView, createTeamAPIKey, revokeTeamAPIKey } from "../auth/api-keys.js";
import type { APIContext } from "../context.js";
import { countByState, listSandboxesInStates } from "../db/sandboxes.js";
import { getTeam, listTeamAPIKeys, listTeams } from "../db/teams.js";
import { failUnfinishedBuilds, listTeamUnfinishedBuilds } from "../db/template-builds.js";
import { SandboxNotFoundError, TeamNotFoundError } from "../errors.js";
import { requireAdminToken } from "../http/admin.js";
import type { App } from "../http/env.js";
import {
  APIKeyIDParamsSchema,
  CreatedTeamAPIKeySchema,
  NewTeamAPIKeySchema,
  TeamAPIKeySchema,
} from "../http/key-schemas.js";
import { errorJSON, jsonBody, jsonResponse } from "../http/schemas.js";
import { killSandbox } from "../sandbox/kill.js";
import { LIVE_STATES } from "../sandbox/states.js";
import { CANCEL_MESSAGES } from "../template/build-runner.js";

const unauthorized = { 401: errorJSON("Missing or wrong X-Admin-Token") };
const noTeam = { 404: errorJSON("No such team") };

const TeamIDParams = z.object({
  teamID: z
    .string()
    .min(1)
    .max(64)
    .openapi({ param: { name: "teamID", in: "path" } }),
});

const AdminTeamListItem = z
  .object({
    teamID: z.string(),
    name: z.string(),
    isDefault: z.boolean(),
    createdAt: z.string(),
    apiKeys: z.number().int(),
    sandboxes: z.record(z.string(), z.number().int()).openapi({ description: "Live sandboxes by state" }),
  })
  .openapi("AdminTeamListItem");

const AdminStatus = z
  .object({
    teams: z.number().int(),
    sandboxes: z.record(z.string(), z.number().int()).openapi({ description: "Live sandboxes by state" }),
    buildsInFlight: z.number().int().openapi({ description: "Template builds waiting or building" }),
  })
  .openapi("AdminStatus");

const listTeamsRoute = createRoute({
  method: "get",
  path: "/admin/teams",
  summary: "Every team, with its key count and sandboxes by state (admin)",
  tags: ["admin"],
  responses: { 200: jsonResponse(z.array(AdminTeamListItem), "The teams"), ...unauthorized },
});

const statusRoute = createRoute({
  method: "get",
  path: "/admin/status",
  summary: "Sandboxes by state and builds in flight over every team (admin)",
  tags: ["admin"],
  responses: { 200: jsonResponse(AdminStatus, "The overview"), ...unauthorized },
});

const runningCountsRoute = createRoute({
  method: "get",
  path: "/admin/sandboxes/running-counts",
  summary: "Running sandboxes per team (admin)",
  tags: ["admin"],
  responses: {
    200: jsonResponse(
      z.record(z.string(), z.number().int()).openapi("AdminTeamRunningSandboxCounts"),
      "Team id → running sandboxes; teams with none are left out",
    ),
    ...unauthorized,
  },
});

const killRoute = createRoute({
  method: "post",
  path: "/admin/teams/{teamID}/sandboxes/kill",
  summary: "Kill every sandbox of a team, running or paused (admin)",
  tags: ["admin"],
  request: { params: TeamIDParams },
  responses: {
    200: jsonResponse(
      z
        .object({ killedCount: z.number().int(), failedCount: z.number().int() })
        .openapi("AdminSandboxKillResult"),
      "How many were killed and how many could not be (starting, or their node unreachable: retry)",
    ),
    ...unauthorized,
    ...noTeam,
  },
});

const cancelBuildsRoute = createRoute({
  method: "post",
  path: "/admin/teams/{teamID}/builds/cancel",
  summary: "Cancel every waiting or running template build of a team (admin)",
  tags: ["admin"],
  request: { params: TeamIDParams },
  responses: {
    200: jsonResponse(
      z
        .object({ cancelledCount: z.number().int(), failedCount: z.number().int() })
        .openapi("AdminBuildCancelResult"),
      "How many builds were cancelled",
    ),
    ...unauthorized,
    ...noTeam,
  },
});

const listKeysRoute = createRoute({
  method: "get",
  path: "/admin/teams/{teamID}/api-keys",
  summary: "A team's API keys, masked (admin)",
  tags: ["admin"],
  request: { params: TeamIDParams },
  responses: { 200: jsonResponse(z.array(TeamAPIKeySchema), "The team's keys"), ...unauthorized, ...noTeam },
});

const createKeyRoute = createRoute({
  method: "post",
  path: "/admin/teams/{teamID}/api-keys",
  summary: "Create an API key for a team (admin)",
  tags: ["admin"],
  request: { params: TeamIDParams, body: jsonBody(NewTeamAPIKeySchema) },
  responses: {
    201: jsonResponse(CreatedTeamAPIKeySchema, "The key, shown only this once"),
    400: errorJSON("Invalid body"),
    ...unauthorized,
    ...noTeam,
  },
});

const deleteKeyRoute = createRoute({
  method: "delete",
  path: "/admin/teams/{teamID}/api-keys/{apiKeyID}",
  summary: "Revoke a team's API key, even its last one (admin)",
  tags: ["admin"],
  request: { params: TeamIDParams.extend(APIKeyIDParamsSchema.shape) },
  responses: {
    204: { description: "Revoked" },
    ...unauthorized,
    404: errorJSON("No such team, or no such key in it"),
  },
});

/** How many sandboxes of a team are killed at once. */
const KILL_CONCURRENCY = 4;

export function registerAdminOperations(app: App, ctx: APIContext): void {
  const adminToken = ctx.config.adminToken;
  if (!adminToken) return;
  const teamOr404 = async (teamID: string) => {
    const team = await getTeam(ctx.db, teamID);
    if (!team) throw new TeamNotFoundError(teamID);
    return team;
  };

  app.openapi(listTeamsRoute, async (c) => {
    requireAdminToken(c, adminToken);
    const [teams, live] = await Promise.all([listTeams(ctx.db), listSandboxesInStates(ctx.db, LIVE_STATES)]);
    const byTeam = new Map<string, Record<string, number>>();
    for (const row of live) {
      const counts = byTeam.get(row.team_id) ?? {};
      counts[row.state] = (counts[row.state] ?? 0) + 1;
      byTeam.set(row.team_id, counts);
    }
    return c.json(
      teams.map((t) => ({
        teamID: t.team_id,
        name: t.name,
        isDefault: t.is_default,
        createdAt: t.created_at.toISOString(),
        apiKeys: t.api_key_count,
        sandboxes: byTeam.get(t.team_id) ?? {},
      })),
      200,
    );
  });

  app.openapi(statusRoute, async (c) => {
    requireAdminToken(c, adminToken);
    const [states, teams, builds] = await Promise.all([
      countByState(ctx.db),
      ctx.db
        .selectFrom("teams")
        .select((eb) => eb.fn.countAll<string>().as("n"))
        .executeTakeFirstOrThrow(),
      ctx.db
        .selectFrom("template_builds")
        .select((eb) => eb.fn.countAll<string>().as("n"))
        .where("status", "in", ["waiting", "building"])
        .executeTakeFirstOrThrow(),
    ]);
    return c.json(
      { teams: Number(teams.n), sandboxes: Object.fromEntries(states), buildsInFlight: Number(builds.n) },
      200,
    );
  });

  app.openapi(runningCountsRoute, async (c) => {
    requireAdminToken(c, adminToken);
    const rows = await ctx.db
      .selectFrom("sandboxes")
      .select(["team_id", (eb) => eb.fn.countAll<string>().as("n")])
      .where("state", "=", "running")
      .groupBy("team_id")
      .execute();
    return c.json(Object.fromEntries(rows.map((r) => [r.team_id, Number(r.n)])), 200);
  });

  app.openapi(killRoute, async (c) => {
    requireAdminToken(c, adminToken);
    const { teamID } = c.req.valid("param");
    await teamOr404(teamID);
    const sandboxes = (await listSandboxesInStates(ctx.db, LIVE_STATES)).filter((s) => s.team_id === teamID);
    let killedCount = 0;
    let failedCount = 0;
    const queue = [...sandboxes];
    const worker = async () => {
      for (let sandbox = queue.shift(); sandbox; sandbox = queue.shift()) {
        try {
          await killSandbox(ctx, teamID, sandbox.sandbox_id);
          killedCount++;
        } catch (err) {
          // Gone meanwhile (its own end, another kill): what was asked for.
          if (err instanceof SandboxNotFoundError) killedCount++;
          else {
            failedCount++;
            ctx.logger.warn(
              { err, teamID, sandboxID: sandbox.sandbox_id },
              "admin kill: could not kill a sandbox",
            );
          }
        }
      }
    };
    await Promise.all(Array.from({ length: KILL_CONCURRENCY }, worker));
    ctx.logger.info({ teamID, killedCount, failedCount }, "admin: killed the team's sandboxes");
    return c.json({ killedCount, failedCount }, 200);
  });

  app.openapi(cancelBuildsRoute, async (c) => {
    requireAdminToken(c, adminToken);
    const { teamID } = c.req.valid("param");
    await teamOr404(teamID);
    const reason = "cancelled by the operator";
    const ids = await listTeamUnfinishedBuilds(ctx.db, teamID);
    // Builds this process runs stop on their node and record the cancel themselves; the rest
    // (waiting, or run by another API process) are ended in the records.
    const stopped = new Set(await ctx.builds.cancelBuilds(new Set(ids), reason));
    const ended = await failUnfinishedBuilds(
      ctx.db,
      ids.filter((id) => !stopped.has(id)),
      CANCEL_MESSAGES[reason],
    );
    const still = await listTeamUnfinishedBuilds(ctx.db, teamID);
    const failedCount = ids.filter((id) => still.includes(id)).length;
    const cancelledCount = stopped.size + ended.length;
    ctx.logger.info({ teamID, cancelledCount, failedCount }, "admin: cancelled the team's builds");
    return c.json({ cancelledCount, failedCount }, 200);
  });

  app.openapi(listKeysRoute, async (c) => {
    requireAdminToken(c, adminToken);
    const { teamID } = c.req.valid("param");
    await teamOr404(teamID);
    return c.json((await listTeamAPIKeys(ctx.db, teamID)).map(apiKeyView), 200);
  });

  app.openapi(createKeyRoute, async (c) => {
    requireAdminToken(c, adminToken);
    const { teamID } = c.req.valid("param");
    const created = await createTeamAPIKey(ctx.db, teamID, c.req.valid("json").name);
    ctx.logger.info({ teamID, apiKeyID: created.id }, "admin: API key created");
    return c.json(created, 201);
  });

  app.openapi(deleteKeyRoute, async (c) => {
    requireAdminToken(c, adminToken);
    const { teamID, apiKeyID } = c.req.valid("param");
    await revokeTeamAPIKey(ctx.db, teamID, apiKeyID, { allowLast: true });
    ctx.logger.info({ teamID, apiKeyID }, "admin: API key revoked");
    return c.body(null, 204);
  });
}
