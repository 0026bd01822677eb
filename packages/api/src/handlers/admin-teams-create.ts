/**
 * POST /admin/teams: creates a team with its first API key, for the operator of a moat (`moat up`
 * prints the admin token). Guarded by `X-Admin-Token`; absent (404) when no admin token is set.
 * The key is answered once and stored only as a hash.
 */
import { createRoute, z } from "@hono/zod-openapi";
import { secretsEqual } from "../auth/secrets.js";
import { createAPIKey, createTeam } from "../auth/teams.js";
import type { APIContext } from "../context.js";
import { UnauthenticatedError } from "../errors.js";
import type { App } from "../http/env.js";
import { errorJSON, jsonResponse } from "../http/schemas.js";

const NewTeamSchema = z.strictObject({ name: z.string().min(1).max(256) }).openapi("NewTeam");
const CreatedTeamSchema = z
  .object({ teamID: z.string(), name: z.string(), apiKey: z.string() })
  .openapi("CreatedTeam");

const route = createRoute({
  method: "post",
  path: "/admin/teams",
  summary: "Create a team and its first API key (admin)",
  tags: ["admin"],
  request: { body: { content: { "application/json": { schema: NewTeamSchema } }, required: true } },
  responses: {
    201: jsonResponse(CreatedTeamSchema, "The team and its API key (shown once)"),
    400: errorJSON("Invalid body"),
    401: errorJSON("Missing or wrong X-Admin-Token"),
  },
});

export function registerAdminTeamsCreate(app: App, ctx: APIContext): void {
  const adminToken = ctx.config.adminToken;
  if (!adminToken) return;
  app.openapi(route, async (c) => {
    if (!secretsEqual(adminToken, c.req.header("x-admin-token"))) {
      throw new UnauthenticatedError("missing or wrong X-Admin-Token");
    }
    const { name } = c.req.valid("json");
    const { teamID } = await createTeam(ctx.db, name);
    const apiKey = await createAPIKey(ctx.db, teamID);
    return c.json({ teamID, name, apiKey }, 201);
  });
}
