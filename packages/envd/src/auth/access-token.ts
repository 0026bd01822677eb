import { createHash, timingSafeEqual } from "node:crypto";

/** Constant-time comparison of a presented token with the configured one. */
export function tokenMatches(expected: string, presented: string | null | undefined): boolean {
  if (presented == null) return false;
  const a = createHash("sha256").update(expected).digest();
  const b = createHash("sha256").update(presented).digest();
  return timingSafeEqual(a, b);
}

/**
 * Whether a request may act on this envd: always while no token is set (a sandbox before its first
 * /init), else only with the token.
 */
export function presentsToken(expected: string | undefined, presented: string | null | undefined): boolean {
  return expected === undefined || tokenMatches(expected, presented);
}

export type FileOperation = "read" | "write";

/**
 * The signature E2B puts on `/files` URLs of secured sandboxes (protocol doc §3.2):
 * `v1_` + unpadded base64 of sha256("<path>:<operation>:<username>:<token>[:<expiration>]").
 */
export function fileSignature(
  path: string,
  operation: FileOperation,
  username: string,
  accessToken: string,
  expiration?: number,
): string {
  let payload = `${path}:${operation}:${username}:${accessToken}`;
  if (expiration !== undefined) payload += `:${expiration}`;
  return `v1_${createHash("sha256").update(payload).digest("base64").replace(/=+$/, "")}`;
}
