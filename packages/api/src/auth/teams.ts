/**
 * Teams and their secrets: the default team made on first start, API keys, access tokens, and
 * the API key `GET /teams` answers for an access token.
 */
import { randomUUID } from "node:crypto";
import type { DB } from "../db/database.js";
import { getDefaultTeam, getTeam, insertAccessToken, insertAPIKey, insertTeam } from "../db/teams.js";
import { InvalidRequestError } from "../errors.js";
import type { TeamLimitOverrides } from "../quotas/limits.js";
import { deriveAPIKey, generateAccessToken, generateAPIKey, hashSecret, maskSecret } from "./secrets.js";

export interface BootstrapResult {
  teamID: string;
  /** The default team's first API key: only on the start that created the team, never again. */
  apiKey?: string;
}

/**
 * Makes the default team and its first API key on the first start; later starts (and a start
 * that lost the race to another process) answer the existing team without a key.
 */
export async function bootstrap(db: DB): Promise<BootstrapResult> {
  const existing = await getDefaultTeam(db);
  if (existing) return { teamID: existing.team_id };
  return db.transaction().execute(async (tx) => {
    const teamID = randomUUID();
    if (!(await insertTeam(tx, { teamID, name: "default", isDefault: true }))) {
      const winner = await getDefaultTeam(tx);
      if (!winner) throw new Error("default team vanished during bootstrap");
      return { teamID: winner.team_id };
    }
    return { teamID, apiKey: await addAPIKey(tx, teamID, "default") };
  });
}

/** Makes a team (not the default one), with its overrides of the default quotas. */
export async function createTeam(
  db: DB,
  name: string,
  limits: TeamLimitOverrides = {},
): Promise<{ teamID: string }> {
  const teamID = randomUUID();
  await insertTeam(db, { teamID, name, isDefault: false, limits });
  return { teamID };
}

/** A new API key for the team; the key is answered once and stored only as a hash. */
export async function createAPIKey(db: DB, teamID: string, name = "api key"): Promise<string> {
  if (!(await getTeam(db, teamID))) throw new InvalidRequestError(`team '${teamID}' not found`);
  return addAPIKey(db, teamID, name);
}

/** A new access token (`sk_e2b_…`) for the team; answered once, stored only as a hash. */
export async function createAccessToken(db: DB, teamID: string, name = "access token"): Promise<string> {
  if (!(await getTeam(db, teamID))) throw new InvalidRequestError(`team '${teamID}' not found`);
  const token = generateAccessToken();
  await insertAccessToken(db, {
    accessTokenID: randomUUID(),
    teamID,
    tokenHash: hashSecret(token),
    tokenMask: maskSecret(token),
    name,
  });
  return token;
}

/**
 * The API key that stands for an access token in its team (see `deriveAPIKey`). It is registered
 * on first use and goes with the token.
 */
export async function apiKeyForAccessToken(
  db: DB,
  teamID: string,
  accessToken: string,
  accessTokenID: string,
): Promise<string> {
  const apiKey = deriveAPIKey(accessToken, teamID);
  await insertAPIKey(db, {
    apiKeyID: randomUUID(),
    teamID,
    keyHash: hashSecret(apiKey),
    keyMask: maskSecret(apiKey),
    name: "from access token",
    accessTokenID,
  });
  return apiKey;
}

async function addAPIKey(db: DB, teamID: string, name: string): Promise<string> {
  const apiKey = generateAPIKey();
  await insertAPIKey(db, {
    apiKeyID: randomUUID(),
    teamID,
    keyHash: hashSecret(apiKey),
    keyMask: maskSecret(apiKey),
    name,
  });
  return apiKey;
}
