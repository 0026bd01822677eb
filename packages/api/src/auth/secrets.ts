/**
 * API keys and access tokens: their formats, how they are stored (a sha256 hash; the secret itself
 * is shown once) and the API key that an access token stands for.
 */
import { createHash, createHmac, randomBytes, timingSafeEqual } from "node:crypto";

export const API_KEY_PREFIX = "e2b_";
export const ACCESS_TOKEN_PREFIX = "sk_e2b_";
const API_KEY = /^e2b_[0-9a-f]{40}$/;
const ACCESS_TOKEN = /^sk_e2b_[0-9a-f]{40}$/;

/** `e2b_` + 40 hex, the format of E2B's keys (the Python SDK checks `^e2b_[0-9a-f]+$`). */
export function generateAPIKey(): string {
  return `${API_KEY_PREFIX}${randomBytes(20).toString("hex")}`;
}

export function generateAccessToken(): string {
  return `${ACCESS_TOKEN_PREFIX}${randomBytes(20).toString("hex")}`;
}

export function isAPIKeyFormat(value: string): boolean {
  return API_KEY.test(value);
}

export function isAccessTokenFormat(value: string): boolean {
  return ACCESS_TOKEN.test(value);
}

export function hashSecret(secret: string): string {
  return createHash("sha256").update(secret).digest("hex");
}

/** "e2b_1a2b3c…9f0e": enough to tell keys apart in a listing, too little to use. */
export function maskSecret(secret: string): string {
  const head = secret.startsWith(ACCESS_TOKEN_PREFIX) ? 11 : 8;
  return `${secret.slice(0, head)}…${secret.slice(-4)}`;
}

/**
 * The API key an access token stands for in one team, for `GET /teams` (the CLI stores the key it
 * answers). Derived with an HMAC keyed by the token, so only a holder of the token can compute
 * it, the server can answer it again on every call without keeping it, and only its hash is stored.
 */
export function deriveAPIKey(accessToken: string, teamID: string): string {
  const digest = createHmac("sha256", accessToken).update(`moat api key for team ${teamID}`).digest("hex");
  return `${API_KEY_PREFIX}${digest.slice(0, 40)}`;
}

/** Constant-time comparison of two secrets (the admin token). */
export function secretsEqual(expected: string, given: string | undefined): boolean {
  if (given === undefined) return false;
  const a = Buffer.from(hashSecret(expected), "hex");
  const b = Buffer.from(hashSecret(given), "hex");
  return timingSafeEqual(a, b);
}
