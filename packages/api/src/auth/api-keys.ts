/**
 * A team's API keys and access tokens as E2B's API shows them (`/api-keys`, `/access-tokens`,
 * the admin key routes): listed by mask only (the secret is answered once, at creation, and stored
 * as a hash), renamed, revoked. A revoked secret fails its very next request: every request reads
 * the keys table.
 */
import { randomUUID } from "node:crypto";
import type { DB } from "../db/database.js";
import type { APIKeyRow } from "../db/schema.js";
import {
  deleteTeamAccessToken,
  getTeam,
  getTeamAPIKey,
  insertAccessToken,
  insertAPIKeyReturning,
  lockTeam,
} from "../db/teams.js";
import { ConflictError, CredentialNotFoundError, TeamNotFoundError } from "../errors.js";
import {
  ACCESS_TOKEN_PREFIX,
  API_KEY_PREFIX,
  generateAccessToken,
  generateAPIKey,
  hashSecret,
  maskSecret,
} from "./secrets.js";

/** E2B's IdentifierMaskingDetails: the secret's prefix, length and a few characters of each end. */
export interface MaskDetails {
  prefix: string;
  valueLength: number;
  maskedValuePrefix: string;
  maskedValueSuffix: string;
}

/** Characters of the secret (after its prefix) shown at each end, as E2B shows them. */
const SHOWN_HEAD = 2;
const SHOWN_TAIL = 4;
/** Every key and token moat makes is its prefix and 40 hex characters. */
const VALUE_LENGTH = 40;

/** The masking details of a stored mask ("e2b_1a2b…9f0e", see `maskSecret`) or of a whole secret. */
export function maskDetails(maskOrSecret: string): MaskDetails {
  const prefix = maskOrSecret.startsWith(ACCESS_TOKEN_PREFIX) ? ACCESS_TOKEN_PREFIX : API_KEY_PREFIX;
  const value = maskOrSecret.slice(prefix.length);
  const [head = "", tail = head] = value.split("…");
  return {
    prefix,
    valueLength: VALUE_LENGTH,
    maskedValuePrefix: head.slice(0, SHOWN_HEAD),
    maskedValueSuffix: tail.slice(-SHOWN_TAIL),
  };
}

/**
 * E2B's TeamAPIKey. moat has no users: `createdBy.id` is the API key or access token that created
 * the key (null when the operator did), so a leaked key's offspring can be found.
 */
export interface APIKeyView {
  id: string;
  name: string;
  mask: MaskDetails;
  createdAt: string;
  createdBy: { id: string; email: null } | null;
  lastUsed: string | null;
}

export function apiKeyView(row: APIKeyRow): APIKeyView {
  return {
    id: row.api_key_id,
    name: row.name,
    mask: maskDetails(row.key_mask),
    createdAt: row.created_at.toISOString(),
    createdBy: row.created_by === null ? null : { id: row.created_by, email: null },
    lastUsed: row.last_used_at?.toISOString() ?? null,
  };
}

/** A new key for the team: its view and the key itself (E2B's CreatedTeamAPIKey), shown this once. */
export async function createTeamAPIKey(
  db: DB,
  teamID: string,
  name: string,
  createdBy?: string,
): Promise<APIKeyView & { key: string }> {
  if (!(await getTeam(db, teamID))) throw new TeamNotFoundError(teamID);
  const key = generateAPIKey();
  const row = await insertAPIKeyReturning(db, {
    apiKeyID: randomUUID(),
    teamID,
    keyHash: hashSecret(key),
    keyMask: maskSecret(key),
    name,
    createdBy,
  });
  // 160 random bits never collide; a stored hash would mean the key is someone else's.
  if (!row) throw new Error("a freshly generated API key collided with a stored one");
  return { ...apiKeyView(row), key };
}

/**
 * Revokes one of the team's keys. Unless `allowLast` (the operator, who can always make another
 * key), the team's last key of its own is kept: with none, the team could reach the API only
 * through an access token or the operator. Keys derived from an access token do not count: they
 * go with their token. Under the team's lock, so two revocations cannot both take "the other one".
 */
export async function revokeTeamAPIKey(
  db: DB,
  teamID: string,
  apiKeyID: string,
  { allowLast }: { allowLast: boolean },
): Promise<void> {
  await db.transaction().execute(async (tx) => {
    if (!(await lockTeam(tx, teamID))) throw new TeamNotFoundError(teamID);
    const key = await getTeamAPIKey(tx, teamID, apiKeyID);
    if (!key) throw new CredentialNotFoundError("API key", apiKeyID);
    if (!allowLast && key.access_token_id === null) {
      const others = await tx
        .selectFrom("api_keys")
        .select((eb) => eb.fn.countAll<string>().as("n"))
        .where("team_id", "=", teamID)
        .where("access_token_id", "is", null)
        .where("api_key_id", "!=", apiKeyID)
        .executeTakeFirstOrThrow();
      if (Number(others.n) === 0) {
        throw new ConflictError(
          `API key '${apiKeyID}' is the team's last key: create another one first (POST /api-keys, moat keys create), then revoke this one`,
        );
      }
    }
    await tx.deleteFrom("api_keys").where("api_key_id", "=", apiKeyID).execute();
  });
}

/** E2B's CreatedAccessToken: the token itself, shown this once. */
export interface CreatedAccessTokenView {
  id: string;
  name: string;
  token: string;
  mask: MaskDetails;
  createdAt: string;
}

export async function createTeamAccessToken(
  db: DB,
  teamID: string,
  name: string,
): Promise<CreatedAccessTokenView> {
  if (!(await getTeam(db, teamID))) throw new TeamNotFoundError(teamID);
  const token = generateAccessToken();
  const id = randomUUID();
  await insertAccessToken(db, {
    accessTokenID: id,
    teamID,
    tokenHash: hashSecret(token),
    tokenMask: maskSecret(token),
    name,
  });
  return { id, name, token, mask: maskDetails(token), createdAt: new Date().toISOString() };
}

/** Revokes one of the team's access tokens, and the API key derived from it (GET /teams). */
export async function revokeTeamAccessToken(db: DB, teamID: string, accessTokenID: string): Promise<void> {
  if (!(await deleteTeamAccessToken(db, teamID, accessTokenID))) {
    throw new CredentialNotFoundError("access token", accessTokenID);
  }
}
