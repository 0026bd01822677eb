/**
 * Query parameters of the sandbox lists, as the SDK sends them: `state` comma-separated (or
 * repeated), `metadata` as `k=v&k2=v2` with each key and value percent-encoded and the whole value
 * percent-encoded again on the wire, and an opaque `nextToken` cursor.
 */
import { z } from "@hono/zod-openapi";
import type { SandboxRowState } from "../db/schema.js";
import { InvalidRequestError } from "../errors.js";
import { PAUSED_STATES, RUNNING_STATES, VISIBLE_STATES } from "../sandbox/states.js";

export const MetadataQuerySchema = z.string().optional().openapi({
  description:
    "Metadata filter: `k=v&k2=v2`, each key and value percent-encoded, then the whole value percent-encoded as a query value",
  example: "user%3Dalice%26env%3Ddev",
});

export const StateQuerySchema = z
  .union([z.string(), z.array(z.string())])
  .optional()
  .openapi({
    description: "running and/or paused, comma-separated; both when absent",
    example: "running,paused",
  });

/** Decodes the metadata filter; the transport already removed the outer encoding. */
export function parseMetadataFilter(raw: string | undefined): Record<string, string> | undefined {
  if (raw === undefined || raw === "") return undefined;
  const filter: Record<string, string> = {};
  for (const [encodedKey, encodedValue] of new URLSearchParams(raw)) {
    let key: string;
    let value: string;
    try {
      key = decodeURIComponent(encodedKey);
      value = decodeURIComponent(encodedValue);
    } catch {
      throw new InvalidRequestError(`metadata filter is not valid percent-encoding: '${raw}'`);
    }
    if (key === "") throw new InvalidRequestError(`metadata filter has an empty key: '${raw}'`);
    if (key.includes("\0") || value.includes("\0")) {
      throw new InvalidRequestError("metadata filter holds a NUL character, which no metadata may contain");
    }
    filter[key] = value;
  }
  return filter;
}

/** A sandbox being paused still shows as running, one being resumed as paused. */
const PUBLIC_STATES: Record<string, readonly SandboxRowState[]> = {
  running: RUNNING_STATES,
  paused: PAUSED_STATES,
};

/** The record states a `state` filter selects; running and paused (all visible ones) when absent. */
export function parseStateFilter(raw: string | string[] | undefined): SandboxRowState[] {
  const values = (Array.isArray(raw) ? raw : raw === undefined ? [] : [raw])
    .flatMap((v) => v.split(","))
    .map((v) => v.trim())
    .filter((v) => v !== "");
  if (values.length === 0) return [...VISIBLE_STATES];
  const states = new Set<SandboxRowState>();
  for (const value of values) {
    const selected = Object.hasOwn(PUBLIC_STATES, value) ? PUBLIC_STATES[value] : undefined;
    if (!selected) throw new InvalidRequestError(`state: '${value}' is not one of running, paused`);
    for (const state of selected) states.add(state);
  }
  return [...states];
}

/** The position after a page's last sandbox: base64url of "<start time>__<sandbox id>". */
export function encodeCursor(after: { startedAt: Date; sandboxID: string }): string {
  return Buffer.from(`${after.startedAt.toISOString()}__${after.sandboxID}`).toString("base64url");
}

export function decodeCursor(token: string): { startedAt: Date; sandboxID: string } {
  const text = Buffer.from(token, "base64url").toString("utf8");
  const match = /^(\d{4}-\d\d-\d\dT[\d:.]+Z)__([a-z0-9]{1,64})$/.exec(text);
  const startedAt = match ? new Date(match[1]!) : undefined;
  if (!match || !startedAt || Number.isNaN(startedAt.getTime())) {
    throw new InvalidRequestError("nextToken is not a token this API issued");
  }
  return { startedAt, sandboxID: match[2]! };
}
