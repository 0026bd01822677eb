/**
 * How templates are named, as E2B names them: `[namespace/]name[:tag]`. A name is unique in its
 * team; the namespace is the team's (its name as a slug, or its id), so `team/name` reaches
 * another team's public template. Names and tags are trimmed and lowercased. The tag `default`
 * always means the template's latest ready build; other tags name the builds they were given to.
 */
import type { TeamRow } from "../db/schema.js";
import { InvalidRequestError } from "../errors.js";

/** The static template every node has (sandbox/templates.ts); no team may take its name. */
export const BASE_TEMPLATE = "base";
export const DEFAULT_TAG = "default";

const NAME = /^[a-z0-9_-]{1,128}$/;
const TAG = /^[a-z0-9_.-]{1,128}$/;
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
/** Template ids: 20 characters of [a-z0-9] (sandbox/ids.ts). */
export const TEMPLATE_ID = /^[a-z0-9]{20}$/;

export interface TemplateReference {
  /** A team's namespace, when the reference names one. */
  namespace?: string;
  name: string;
  /** undefined: the `default` tag (the latest ready build). */
  tag?: string;
}

/**
 * Parses `[namespace/]name[:tag]`; the messages name `field`. `default` as the tag is the same as
 * no tag.
 */
export function parseTemplateReference(input: string, field = "name"): TemplateReference {
  const text = input.trim().toLowerCase();
  const colon = text.indexOf(":");
  const identifier = colon === -1 ? text : text.slice(0, colon);
  const tagText = colon === -1 ? undefined : text.slice(colon + 1);
  const slash = identifier.indexOf("/");
  const namespace = slash === -1 ? undefined : identifier.slice(0, slash);
  const name = slash === -1 ? identifier : identifier.slice(slash + 1);
  if (namespace !== undefined && !NAME.test(namespace)) {
    throw new InvalidRequestError(`${field}: '${namespace}' is not a valid namespace`);
  }
  if (!NAME.test(name)) {
    throw new InvalidRequestError(
      `${field}: '${name}' is not a valid template name (1-128 characters of a-z, 0-9, '_' and '-')`,
    );
  }
  const tag = tagText === undefined ? undefined : validateTag(tagText, field);
  return {
    ...(namespace !== undefined ? { namespace } : {}),
    name,
    ...(tag !== undefined && tag !== DEFAULT_TAG ? { tag } : {}),
  };
}

/** Like parseTemplateReference, or undefined for input that cannot name a template. */
export function tryParseTemplateReference(input: string): TemplateReference | undefined {
  try {
    return parseTemplateReference(input);
  } catch (err) {
    if (err instanceof InvalidRequestError) return undefined;
    throw err;
  }
}

function validateTag(raw: string, field: string): string {
  const tag = raw.trim().toLowerCase();
  if (!TAG.test(tag)) {
    throw new InvalidRequestError(
      `${field}: '${raw}' is not a valid tag (1-128 characters of a-z, 0-9, '_', '.' and '-')`,
    );
  }
  if (UUID.test(tag)) throw new InvalidRequestError(`${field}: a tag cannot be a UUID ('${raw}')`);
  return tag;
}

/** Validates, lowercases and deduplicates tags, in their first order. */
export function validateTags(tags: readonly string[], field = "tags"): string[] {
  return [...new Set(tags.map((tag) => validateTag(tag, field)))];
}

/** A team's namespace: its name as a slug (its id when the name has no usable characters). */
export function teamNamespace(team: Pick<TeamRow, "team_id" | "name">): string {
  const slug = team.name
    .toLowerCase()
    .replace(/[^a-z0-9_-]+/g, "-")
    .replace(/^-+|-+$/g, "")
    .slice(0, 128);
  return slug || team.team_id;
}

/** Whether a reference's namespace (if any) is the team's own. */
export function isOwnNamespace(team: Pick<TeamRow, "team_id" | "name">, namespace?: string): boolean {
  return namespace === undefined || namespace === teamNamespace(team) || namespace === team.team_id;
}

/** What E2B's responses call `names` (namespaced) and `aliases` (bare) of a template. */
export function templateNames(
  team: Pick<TeamRow, "team_id" | "name">,
  name: string,
): { names: string[]; aliases: string[] } {
  return { names: [`${teamNamespace(team)}/${name}`], aliases: [name] };
}
