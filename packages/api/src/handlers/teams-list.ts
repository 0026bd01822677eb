/**
 * GET /teams: the caller's team with an API key for it, as the CLI's login/configure expects
 * (it stores the `apiKey` of the `isDefault` team). Keys are stored hashed, so the key answered
 * is one the caller can have: the API key it authenticated with, or, for an access token, the
 * key derived from that token (auth/secrets.ts `deriveAPIKey`).
 */
import { createRoute, z } from "@hono/zod-openapi";
import { apiKeyForAccessToken } from "../auth/teams.js";
import type { APIContext } from "../context.js";
import type { App } from "../http/env.js";
import { errorResponses, jsonResponse, TeamSchema } from "../http/schemas.js";
import { SECURITY } from "./shared.js";

const route = createRoute({
  method: "get",
  path: "/teams",
  summary: "List the caller's teams",
  tags: ["teams"],
  security: SECURITY,
  responses: { 200: jsonResponse(z.array(TeamSchema), "Teams"), ...errorResponses },
});

export function registerTeamsList(app: App, ctx: APIContext): void {
  app.openapi(route, async (c) => {
    const { team, credential } = c.get("caller");
    const apiKey =
      credential.kind === "apiKey"
        ? credential.apiKey
        : await apiKeyForAccessToken(ctx.db, team.team_id, credential.accessToken, credential.accessTokenID);
    return c.json([{ teamID: team.team_id, name: team.name, apiKey, isDefault: team.is_default }], 200);
  });
}
