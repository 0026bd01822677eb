/**
 * Finding the template (and build) a request names. A reference is `[namespace/]name[:tag]` or a
 * template id. Without a namespace, a name is looked up in the caller's team, then as an id; a
 * namespace names a team (its slug or id), whose template is usable by others only when public.
 * A build is the one the tag names, or for no tag (`default`) the latest ready one.
 */
import type { DB } from "../db/database.js";
import type { TeamRow, TemplateBuildRow, TemplateRow } from "../db/schema.js";
import { getBuild, latestReadyBuild, taggedReadyBuild } from "../db/template-builds.js";
import { getTeamTemplateByName, getTemplate, listTemplatesByName } from "../db/templates.js";
import { BuildNotFoundError, TemplateNotFoundError } from "../errors.js";
import {
  isOwnNamespace,
  TEMPLATE_ID,
  type TemplateReference,
  teamNamespace,
  tryParseTemplateReference,
} from "./names.js";

/** The template a reference names, whoever owns it; callers check `usableBy`. */
export async function lookupTemplate(
  db: DB,
  team: TeamRow,
  ref: TemplateReference,
): Promise<TemplateRow | undefined> {
  if (isOwnNamespace(team, ref.namespace)) {
    const own = await getTeamTemplateByName(db, team.team_id, ref.name);
    if (own) return own;
    if (ref.namespace === undefined && TEMPLATE_ID.test(ref.name)) return getTemplate(db, ref.name);
    return undefined;
  }
  const named = await listTemplatesByName(db, ref.name);
  return named.find(
    ({ team: owner }) => ref.namespace === teamNamespace(owner) || ref.namespace === owner.team_id,
  )?.template;
}

/**
 * A team may start sandboxes from (and build on) its own templates and public ones; a snapshot
 * (a sandbox's memory and files) only its own, whatever its row says.
 */
export function usableBy(team: TeamRow, template: TemplateRow): boolean {
  return template.team_id === team.team_id || (template.public && !template.snapshot);
}

/**
 * The caller's own template named by `input` (a name or an id; a tag is ignored): what the
 * management routes act on. Another team's template reads as missing.
 */
export async function findOwnTemplate(db: DB, team: TeamRow, input: string): Promise<TemplateRow> {
  const ref = tryParseTemplateReference(input);
  const template = ref && (await lookupTemplate(db, team, ref));
  if (!template || template.team_id !== team.team_id) throw new TemplateNotFoundError(input);
  return template;
}

/** A build of the caller's own template (see findOwnTemplate); BuildNotFoundError when it has none such. */
export async function findOwnBuild(
  db: DB,
  team: TeamRow,
  templateRef: string,
  buildID: string,
): Promise<{ template: TemplateRow; build: TemplateBuildRow }> {
  const template = await findOwnTemplate(db, team, templateRef);
  const build = await getBuild(db, template.template_id, buildID);
  if (!build) throw new BuildNotFoundError(buildID);
  return { template, build };
}

/**
 * The template and build a sandbox create or a `fromTemplate` names; TemplateNotFoundError when
 * the template is missing, not usable by the team, or has no ready build (under the tag).
 */
export async function resolveTemplateBuild(
  db: DB,
  team: TeamRow,
  input: string,
): Promise<{ template: TemplateRow; build: TemplateBuildRow }> {
  const ref = tryParseTemplateReference(input);
  const template = ref && (await lookupTemplate(db, team, ref));
  if (!ref || !template || !usableBy(team, template)) throw new TemplateNotFoundError(input);
  const build = await readyBuildOf(db, template, ref.tag);
  if (!build) {
    throw new TemplateNotFoundError(
      input,
      ref.tag === undefined
        ? `template '${input}' has no ready build`
        : `template '${input}' has no ready build tagged '${ref.tag}'`,
    );
  }
  return { template, build };
}

/** The ready build a tag names; the latest ready build for no tag (`default`). */
export function readyBuildOf(
  db: DB,
  template: TemplateRow,
  tag: string | undefined,
): Promise<TemplateBuildRow | undefined> {
  return tag === undefined
    ? latestReadyBuild(db, template.template_id)
    : taggedReadyBuild(db, template.template_id, tag);
}
