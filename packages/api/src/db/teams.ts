/** Typed queries on teams, API keys and access tokens. */

import type { TeamLimitOverrides } from "../quotas/limits.js";
import type { DB } from "./database.js";
import type { TeamRow } from "./schema.js";

export async function findTeamByAPIKeyHash(db: DB, keyHash: string): Promise<TeamRow | undefined> {
  return db
    .selectFrom("api_keys")
    .innerJoin("teams", "teams.team_id", "api_keys.team_id")
    .selectAll("teams")
    .where("api_keys.key_hash", "=", keyHash)
    .executeTakeFirst();
}

export async function findAccessToken(
  db: DB,
  tokenHash: string,
): Promise<{ team: TeamRow; accessTokenID: string } | undefined> {
  const row = await db
    .selectFrom("access_tokens")
    .innerJoin("teams", "teams.team_id", "access_tokens.team_id")
    .selectAll("teams")
    .select("access_tokens.access_token_id")
    .where("access_tokens.token_hash", "=", tokenHash)
    .executeTakeFirst();
  if (!row) return undefined;
  const { access_token_id, ...team } = row;
  return { team, accessTokenID: access_token_id };
}

export async function getTeam(db: DB, teamID: string): Promise<TeamRow | undefined> {
  return db.selectFrom("teams").selectAll().where("team_id", "=", teamID).executeTakeFirst();
}

export async function getDefaultTeam(db: DB): Promise<TeamRow | undefined> {
  return db.selectFrom("teams").selectAll().where("is_default", "=", true).executeTakeFirst();
}

/** Inserts a team; for the default team, answers false when another one won the race. */
export async function insertTeam(
  db: DB,
  team: { teamID: string; name: string; isDefault: boolean; limits?: TeamLimitOverrides },
): Promise<boolean> {
  const result = await db
    .insertInto("teams")
    .values({
      team_id: team.teamID,
      name: team.name,
      is_default: team.isDefault,
      ...(team.limits ? { limits: JSON.stringify(team.limits) } : {}),
    })
    .onConflict((oc) => oc.column("is_default").where("is_default", "=", true).doNothing())
    .executeTakeFirst();
  return (result.numInsertedOrUpdatedRows ?? 0n) > 0n;
}

export interface NewAPIKey {
  apiKeyID: string;
  teamID: string;
  keyHash: string;
  keyMask: string;
  name: string;
  accessTokenID?: string;
}

/** Inserts a key; a key whose hash is already stored is left as it is. */
export async function insertAPIKey(db: DB, key: NewAPIKey): Promise<void> {
  await db
    .insertInto("api_keys")
    .values({
      api_key_id: key.apiKeyID,
      team_id: key.teamID,
      key_hash: key.keyHash,
      key_mask: key.keyMask,
      name: key.name,
      access_token_id: key.accessTokenID ?? null,
    })
    .onConflict((oc) => oc.column("key_hash").doNothing())
    .execute();
}

export async function insertAccessToken(
  db: DB,
  token: { accessTokenID: string; teamID: string; tokenHash: string; tokenMask: string; name: string },
): Promise<void> {
  await db
    .insertInto("access_tokens")
    .values({
      access_token_id: token.accessTokenID,
      team_id: token.teamID,
      token_hash: token.tokenHash,
      token_mask: token.tokenMask,
      name: token.name,
    })
    .execute();
}

/** Replaces the team's quota overrides; answers the team, or undefined when there is none. */
export async function setTeamLimits(
  db: DB,
  teamID: string,
  limits: TeamLimitOverrides,
): Promise<TeamRow | undefined> {
  return db
    .updateTable("teams")
    .set({ limits: JSON.stringify(limits) })
    .where("team_id", "=", teamID)
    .returningAll()
    .executeTakeFirst();
}

/**
 * The team's row, locked until the transaction `db` ends: what quota checks hold while they count
 * and then add, so that concurrent requests (in any API process on the database) take turns and
 * cannot together overshoot a limit.
 */
export async function lockTeam(db: DB, teamID: string): Promise<TeamRow | undefined> {
  return db.selectFrom("teams").selectAll().where("team_id", "=", teamID).forUpdate().executeTakeFirst();
}
