/**
 * How snapshots are named, as E2B names them: a snapshot is a template of its team, so its name
 * follows the template rules (`[team/]name[:tag]`, template/names.ts) and it is reached by the
 * same references. One taken without a name is named by its template id.
 */
import { findBuiltinTemplate } from "@moat/shared";
import type { TeamRow, TemplateRow } from "../db/schema.js";
import { InvalidRequestError } from "../errors.js";
import {
  BASE_TEMPLATE,
  DEFAULT_TAG,
  isOwnNamespace,
  parseTemplateReference,
  TEMPLATE_ID,
  teamNamespace,
} from "../template/names.js";

export interface SnapshotName {
  name: string;
  /** undefined: `default`. */
  tag?: string;
}

/** A snapshot's name as the create names it; 400 for one no template could have. */
export function parseSnapshotName(team: TeamRow, input: string): SnapshotName {
  const ref = parseTemplateReference(input, "name");
  if (!isOwnNamespace(team, ref.namespace)) {
    throw new InvalidRequestError(
      `name: namespace '${ref.namespace}' is not your team's ('${teamNamespace(team)}')`,
    );
  }
  if (ref.name === BASE_TEMPLATE || findBuiltinTemplate(ref.name)) {
    throw new InvalidRequestError(`name: '${ref.name}' is reserved for a template every moat node has`);
  }
  // Unnamed snapshots are named by their template id: a name like one would be ambiguous.
  if (TEMPLATE_ID.test(ref.name)) {
    throw new InvalidRequestError(
      `name: '${ref.name}' reads as a template id (20 characters of a-z and 0-9); choose another name`,
    );
  }
  return { name: ref.name, ...(ref.tag !== undefined ? { tag: ref.tag } : {}) };
}

/**
 * E2B's SnapshotInfo: `snapshotID` is `team/name:tag` for a named snapshot, `templateID:tag` for
 * one without a name; either is what a create names. `names` are the namespaced names (none for
 * an unnamed snapshot).
 */
export function snapshotInfo(
  team: Pick<TeamRow, "team_id" | "name">,
  template: Pick<TemplateRow, "template_id" | "name">,
  tag: string | undefined,
): { snapshotID: string; names: string[] } {
  const suffix = `:${tag ?? DEFAULT_TAG}`;
  if (template.name === template.template_id)
    return { snapshotID: `${template.template_id}${suffix}`, names: [] };
  const name = `${teamNamespace(team)}/${template.name}`;
  return { snapshotID: `${name}${suffix}`, names: [name] };
}
