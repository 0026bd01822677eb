/**
 * Who is calling: a team, identified by an API key (`X-API-Key`) or an access token
 * (`Authorization: Bearer sk_e2b_…`, optionally with `X-Team-ID` naming the token's team).
 */
import type { DB } from "../db/database.js";
import type { TeamRow } from "../db/schema.js";
import { findAccessToken, findTeamByAPIKeyHash, touchAPIKey } from "../db/teams.js";
import { UnauthenticatedError } from "../errors.js";
import type { TeamLimits } from "../quotas/limits.js";
import { hashSecret } from "./secrets.js";

/** `id` names the credential without revealing it (the rate limit counts per id). */
export type Credential =
  | { kind: "apiKey"; apiKey: string; apiKeyID: string; id: string }
  | { kind: "accessToken"; accessToken: string; accessTokenID: string; id: string };

export interface Caller {
  team: TeamRow;
  credential: Credential;
}

/** A caller with the team's limits (the operator's defaults with the team's overrides). */
export interface TeamCaller extends Caller {
  limits: TeamLimits;
}

/** How stale an API key's `lastUsed` may be. */
export const LAST_USED_PRECISION_MS = 60_000;

export interface PresentedCredentials {
  apiKey?: string;
  authorization?: string;
  teamID?: string;
}

export async function authenticate(db: DB, presented: PresentedCredentials): Promise<Caller> {
  const apiKey = presented.apiKey?.trim();
  if (apiKey) {
    const keyHash = hashSecret(apiKey);
    const found = await findTeamByAPIKeyHash(db, keyHash);
    if (!found) throw new UnauthenticatedError("invalid API key");
    const { team, apiKeyID, lastUsedAt } = found;
    if (presented.teamID && presented.teamID !== team.team_id) {
      throw new UnauthenticatedError(`the API key does not belong to team '${presented.teamID}'`);
    }
    // `lastUsed` in the key listing; written at most once a minute per key, not on every request.
    const now = new Date();
    if (!lastUsedAt || now.getTime() - lastUsedAt.getTime() >= LAST_USED_PRECISION_MS) {
      await touchAPIKey(db, apiKeyID, now);
    }
    return { team, credential: { kind: "apiKey", apiKey, apiKeyID, id: `key:${keyHash}` } };
  }
  const bearer = /^Bearer\s+(\S+)\s*$/i.exec(presented.authorization ?? "")?.[1];
  if (bearer) {
    const found = await findAccessToken(db, hashSecret(bearer));
    if (!found) throw new UnauthenticatedError("invalid access token");
    if (presented.teamID && presented.teamID !== found.team.team_id) {
      throw new UnauthenticatedError(`the access token does not belong to team '${presented.teamID}'`);
    }
    return {
      team: found.team,
      credential: {
        kind: "accessToken",
        accessToken: bearer,
        accessTokenID: found.accessTokenID,
        id: `token:${found.accessTokenID}`,
      },
    };
  }
  throw new UnauthenticatedError(
    "missing API key: send it in the X-API-Key header (E2B_API_KEY), or an access token as Authorization: Bearer",
  );
}
