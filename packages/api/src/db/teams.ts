/** Typed queries on teams, API keys and access tokens. */

import type { TeamLimitOverrides } from "../quotas/limits.js";
import type { DB } from "./database.js";
import type { APIKeyRow, TeamRow } from "./schema.js";

/** The team a key belongs to, with the key's id and when it was last used. */
export async function findTeamByAPIKeyHash(
  db: DB,
  keyHash: string,
): Promise<{ team: TeamRow; apiKeyID: string; lastUsedAt: Date | null } | undefined> {
  const row = await db
    .selectFrom("api_keys")
    .innerJoin("teams", "teams.team_id", "api_keys.team_id")
    .selectAll("teams")
    .select(["api_keys.api_key_id", "api_keys.last_used_at"])
    .where("api_keys.key_hash", "=", keyHash)
    .executeTakeFirst();
  if (!row) return undefined;
  const { api_key_id, last_used_at, ...team } = row;
  return { team, apiKeyID: api_key_id, lastUsedAt: last_used_at };
}

/** Records that the key was just used. */
export async function touchAPIKey(db: DB, apiKeyID: string, at: Date): Promise<void> {
  await db.updateTable("api_keys").set({ last_used_at: at }).where("api_key_id", "=", apiKeyID).execute();
}

/** The team's keys, oldest first. */
export async function listTeamAPIKeys(db: DB, teamID: string): Promise<APIKeyRow[]> {
  return db
    .selectFrom("api_keys")
    .selectAll()
    .where("team_id", "=", teamID)
    .orderBy("created_at")
    .orderBy("api_key_id")
    .execute();
}

/** The key, if it is the team's (another team's key reads as missing). */
export async function getTeamAPIKey(
  db: DB,
  teamID: string,
  apiKeyID: string,
): Promise<APIKeyRow | undefined> {
  return db
    .selectFrom("api_keys")
    .selectAll()
    .where("team_id", "=", teamID)
    .where("api_key_id", "=", apiKeyID)
    .executeTakeFirst();
}

export async function renameTeamAPIKey(
  db: DB,
  teamID: string,
  apiKeyID: string,
  name: string,
): Promise<APIKeyRow | undefined> {
  return db
    .updateTable("api_keys")
    .set({ name })
    .where("team_id", "=", teamID)
    .where("api_key_id", "=", apiKeyID)
    .returningAll()
    .executeTakeFirst();
}

/** Deletes the team's key; answers whether there was one. */
export async function deleteTeamAPIKey(db: DB, teamID: string, apiKeyID: string): Promise<boolean> {
  const result = await db
    .deleteFrom("api_keys")
    .where("team_id", "=", teamID)
    .where("api_key_id", "=", apiKeyID)
    .executeTakeFirst();
  return (result.numDeletedRows ?? 0n) > 0n;
}

/** Deletes the team's access token (and the key derived from it); answers whether there was one. */
export async function deleteTeamAccessToken(db: DB, teamID: string, accessTokenID: string): Promise<boolean> {
  const result = await db
    .deleteFrom("access_tokens")
    .where("team_id", "=", teamID)
    .where("access_token_id", "=", accessTokenID)
    .executeTakeFirst();
  return (result.numDeletedRows ?? 0n) > 0n;
}

/** Every team, oldest first, with how many keys each has. */
export async function listTeams(db: DB): Promise<Array<TeamRow & { api_key_count: number }>> {
  const rows = await db
    .selectFrom("teams")
    .leftJoin("api_keys", "api_keys.team_id", "teams.team_id")
    .selectAll("teams")
    .select((eb) => eb.fn.count<string>("api_keys.api_key_id").as("api_key_count"))
    .groupBy("teams.team_id")
    .orderBy("teams.created_at")
    .orderBy("teams.team_id")
    .execute();
  return rows.map((r) => ({ ...r, api_key_count: Number(r.api_key_count) }));
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
  /** The id of the API key or access token that asked for it. */
  createdBy?: string;
}

/** Inserts a key; a key whose hash is already stored is left as it is. */
export async function insertAPIKey(db: DB, key: NewAPIKey): Promise<void> {
  await insertAPIKeyReturning(db, key);
}

/** Inserts a key and answers its row; undefined when a key with that hash is already stored. */
export async function insertAPIKeyReturning(db: DB, key: NewAPIKey): Promise<APIKeyRow | undefined> {
  return db
    .insertInto("api_keys")
    .values({
      api_key_id: key.apiKeyID,
      team_id: key.teamID,
      key_hash: key.keyHash,
      key_mask: key.keyMask,
      name: key.name,
      access_token_id: key.accessTokenID ?? null,
      created_by: key.createdBy ?? null,
    })
    .onConflict((oc) => oc.column("key_hash").doNothing())
    .returningAll()
    .executeTakeFirst();
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
