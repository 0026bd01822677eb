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

export { type FileOperation, fileSignature } from "@moat/shared";
