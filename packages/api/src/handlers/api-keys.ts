/**
 * The caller's team's API keys (E2B's `/api-keys`): list (masks only), create (the key answered
 * once), rename, revoke. Either credential may call them; another team's key id is a 404. The
 * team's last key of its own cannot be revoked here (409; the operator's admin route can).
 */
import { createRoute, z } from "@hono/zod-openapi";
import { apiKeyView, createTeamAPIKey, revokeTeamAPIKey } from "../auth/api-keys.js";
import type { Credential } from "../auth/authenticate.js";
import type { APIContext } from "../context.js";
import { listTeamAPIKeys, renameTeamAPIKey } from "../db/teams.js";
import { CredentialNotFoundError } from "../errors.js";
import type { App } from "../http/env.js";
import {
  APIKeyIDParamsSchema,
  CreatedTeamAPIKeySchema,
  NewTeamAPIKeySchema,
  TeamAPIKeySchema,
  UpdateTeamAPIKeySchema,
} from "../http/key-schemas.js";
import { errorJSON, errorResponses, jsonBody, jsonResponse } from "../http/schemas.js";
import { SECURITY } from "./shared.js";

const notFound = { 404: errorJSON("No such API key in the caller's team") };

const listRoute = createRoute({
  method: "get",
  path: "/api-keys",
  summary: "List the team's API keys",
  tags: ["api-keys"],
  security: SECURITY,
  responses: { 200: jsonResponse(z.array(TeamAPIKeySchema), "The team's keys, masked"), ...errorResponses },
});

const createKeyRoute = createRoute({
  method: "post",
  path: "/api-keys",
  summary: "Create an API key for the team",
  tags: ["api-keys"],
  security: SECURITY,
  request: { body: jsonBody(NewTeamAPIKeySchema) },
  responses: {
    201: jsonResponse(CreatedTeamAPIKeySchema, "The key, shown only this once"),
    ...errorResponses,
  },
});

const updateRoute = createRoute({
  method: "patch",
  path: "/api-keys/{apiKeyID}",
  summary: "Rename an API key",
  tags: ["api-keys"],
  security: SECURITY,
  request: { params: APIKeyIDParamsSchema, body: jsonBody(UpdateTeamAPIKeySchema) },
  responses: { 200: jsonResponse(TeamAPIKeySchema, "The renamed key"), ...errorResponses, ...notFound },
});

const deleteRoute = createRoute({
  method: "delete",
  path: "/api-keys/{apiKeyID}",
  summary: "Revoke an API key",
  tags: ["api-keys"],
  security: SECURITY,
  request: { params: APIKeyIDParamsSchema },
  responses: {
    204: { description: "Revoked: the key fails from its next request on" },
    ...errorResponses,
    ...notFound,
    409: errorJSON("The team's last key: create another one first"),
  },
});

/** The id of the key or token a request authenticated with (recorded as a new key's creator). */
export function credentialID(credential: Credential): string {
  return credential.kind === "apiKey" ? credential.apiKeyID : credential.accessTokenID;
}

export function registerAPIKeys(app: App, ctx: APIContext): void {
  app.openapi(listRoute, async (c) => {
    const rows = await listTeamAPIKeys(ctx.db, c.get("caller").team.team_id);
    return c.json(rows.map(apiKeyView), 200);
  });
  app.openapi(createKeyRoute, async (c) => {
    const { team, credential } = c.get("caller");
    const created = await createTeamAPIKey(
      ctx.db,
      team.team_id,
      c.req.valid("json").name,
      credentialID(credential),
    );
    ctx.logger.info({ teamID: team.team_id, apiKeyID: created.id }, "API key created");
    return c.json(created, 201);
  });
  app.openapi(updateRoute, async (c) => {
    const { apiKeyID } = c.req.valid("param");
    const row = await renameTeamAPIKey(
      ctx.db,
      c.get("caller").team.team_id,
      apiKeyID,
      c.req.valid("json").name,
    );
    if (!row) throw new CredentialNotFoundError("API key", apiKeyID);
    return c.json(apiKeyView(row), 200);
  });
  app.openapi(deleteRoute, async (c) => {
    const teamID = c.get("caller").team.team_id;
    const { apiKeyID } = c.req.valid("param");
    await revokeTeamAPIKey(ctx.db, teamID, apiKeyID, { allowLast: false });
    ctx.logger.info({ teamID, apiKeyID }, "API key revoked");
    return c.body(null, 204);
  });
}
