/** Sandbox and template ids and the per-sandbox access tokens. */
import { randomBytes } from "node:crypto";

const ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789";
/** Bytes at or above this are rejected so that every character is equally likely. */
const UNBIASED_LIMIT = 256 - (256 % ALPHABET.length);

/** 20 characters of [a-z0-9], as E2B's: what the proxy's host parsing (`^[a-z0-9]+$`) accepts. */
export function newSandboxID(length = 20): string {
  let id = "";
  while (id.length < length) {
    for (const byte of randomBytes(length * 2)) {
      if (byte >= UNBIASED_LIMIT) continue;
      id += ALPHABET[byte % ALPHABET.length];
      if (id.length === length) break;
    }
  }
  return id;
}

/** Template ids have the sandbox ids' form (E2B's do too): 20 characters of [a-z0-9]. */
export function newTemplateID(): string {
  return newSandboxID();
}

/** A token envd requires in X-Access-Token (and signs file URLs with). */
export function newEnvdAccessToken(): string {
  return randomBytes(32).toString("hex");
}

/** A token the proxy requires in e2b-traffic-access-token on non-envd ports. */
export function newTrafficAccessToken(): string {
  return randomBytes(32).toString("hex");
}
