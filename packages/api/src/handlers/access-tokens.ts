/**
 * E2B's `/access-tokens`: create (`{name}` → the token, shown once) and revoke, by a caller
 * holding an access token of the team. An API key cannot: keys are what applications and agents
 * hold, and a leaked key must not be able to mint a token that outlives its revocation.
 * Revoking a token also revokes the API key derived from it (GET /teams).
 */
import { createRoute } from "@hono/zod-openapi";
import { createTeamAccessToken, revokeTeamAccessToken } from "../auth/api-keys.js";
import type { Caller } from "../auth/authenticate.js";
import type { APIContext } from "../context.js";
import { ForbiddenError } from "../errors.js";
import type { App } from "../http/env.js";
import {
  AccessTokenIDParamsSchema,
  CreatedAccessTokenSchema,
  NewAccessTokenSchema,
} from "../http/key-schemas.js";
import { errorJSON, errorResponses, jsonBody, jsonResponse } from "../http/schemas.js";

const SECURITY = [{ AccessTokenAuth: [] }];
const forbidden = { 403: errorJSON("Called with an API key: access tokens need an access token") };

const createTokenRoute = createRoute({
  method: "post",
  path: "/access-tokens",
  summary: "Create an access token",
  tags: ["access-tokens"],
  security: SECURITY,
  request: { body: jsonBody(NewAccessTokenSchema) },
  responses: {
    201: jsonResponse(CreatedAccessTokenSchema, "The token, shown only this once"),
    ...errorResponses,
    ...forbidden,
  },
});

const deleteRoute = createRoute({
  method: "delete",
  path: "/access-tokens/{accessTokenID}",
  summary: "Revoke an access token",
  tags: ["access-tokens"],
  security: SECURITY,
  request: { params: AccessTokenIDParamsSchema },
  responses: {
    204: { description: "Revoked, with the API key derived from it" },
    ...errorResponses,
    ...forbidden,
    404: errorJSON("No such access token in the caller's team"),
  },
});

function requireAccessToken(caller: Caller): void {
  if (caller.credential.kind !== "accessToken") {
    throw new ForbiddenError(
      "access tokens are managed with an access token (Authorization: Bearer sk_e2b_…), not an API key",
    );
  }
}

export function registerAccessTokens(app: App, ctx: APIContext): void {
  app.openapi(createTokenRoute, async (c) => {
    const caller = c.get("caller");
    requireAccessToken(caller);
    const created = await createTeamAccessToken(ctx.db, caller.team.team_id, c.req.valid("json").name);
    ctx.logger.info({ teamID: caller.team.team_id, accessTokenID: created.id }, "access token created");
    return c.json(created, 201);
  });
  app.openapi(deleteRoute, async (c) => {
    const caller = c.get("caller");
    requireAccessToken(caller);
    const { accessTokenID } = c.req.valid("param");
    await revokeTeamAccessToken(ctx.db, caller.team.team_id, accessTokenID);
    ctx.logger.info({ teamID: caller.team.team_id, accessTokenID }, "access token revoked");
    return c.body(null, 204);
  });
}
