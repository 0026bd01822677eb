/**
 * Requesting a build (POST /v3/templates, step 1 of the SDK's Template.build): the team's template
 * of that name, made now when it has none, gets a new build in `waiting`. Builds of it that were
 * requested and never started are superseded. The tags the request names are given to the new
 * build (they name it once it is ready; `default` always names the latest ready build).
 */
import { randomUUID } from "node:crypto";
import { findBuiltinTemplate } from "@moat/shared";
import type { APIContext } from "../context.js";
import type { TeamRow } from "../db/schema.js";
import { insertBuild, supersedeUnstartedBuilds } from "../db/template-builds.js";
import { assignTags } from "../db/template-tags.js";
import { getTeamTemplateByName, upsertTemplateForBuild } from "../db/templates.js";
import { ConflictError, InvalidRequestError } from "../errors.js";
import { checkResources } from "../quotas/check.js";
import { teamLimits } from "../quotas/limits.js";
import { newTemplateID } from "../sandbox/ids.js";
import {
  BASE_TEMPLATE,
  DEFAULT_TAG,
  isOwnNamespace,
  parseTemplateReference,
  templateNames,
  validateTags,
} from "./names.js";

/** Infra's defaults for a template's sandboxes. */
export const DEFAULT_TEMPLATE_CPU = 2;
export const DEFAULT_TEMPLATE_MEMORY_MB = 1024;

export interface BuildRequest {
  /** "name" or "name:tag" (also "team/name"); `alias` is its deprecated spelling. */
  name?: string;
  alias?: string;
  tags?: string[];
  cpuCount?: number;
  memoryMB?: number;
  teamID?: string;
}

export interface RequestedBuild {
  templateID: string;
  buildID: string;
  public: boolean;
  names: string[];
  aliases: string[];
  /** The tags the build gets; `default` when the request named none. */
  tags: string[];
}

export async function requestBuild(
  ctx: APIContext,
  team: TeamRow,
  body: BuildRequest,
): Promise<RequestedBuild> {
  if (body.teamID !== undefined && body.teamID !== team.team_id) {
    throw new InvalidRequestError(`teamID: '${body.teamID}' is not the team of the API key`);
  }
  const field = body.name !== undefined ? "name" : "alias";
  const input = body.name ?? body.alias;
  if (input === undefined || input.trim() === "") throw new InvalidRequestError("name is required");
  const ref = parseTemplateReference(input, field);
  if (!isOwnNamespace(team, ref.namespace)) {
    throw new InvalidRequestError(`${field}: namespace '${ref.namespace}' is not your team's`);
  }
  if (ref.name === BASE_TEMPLATE) {
    throw new InvalidRequestError(`${field}: '${BASE_TEMPLATE}' is reserved for the base template`);
  }
  if (findBuiltinTemplate(ref.name)) {
    throw new InvalidRequestError(`${field}: '${ref.name}' is reserved for a template every moat node has`);
  }
  const tags = validateTags([...(ref.tag !== undefined ? [ref.tag] : []), ...(body.tags ?? [])]).filter(
    (tag) => tag !== DEFAULT_TAG,
  );
  const buildID = randomUUID();
  const cpuCount = body.cpuCount ?? DEFAULT_TEMPLATE_CPU;
  const memoryMB = body.memoryMB ?? DEFAULT_TEMPLATE_MEMORY_MB;
  // Its build sandboxes and its sandboxes get these: past the team's maximum is refused now.
  checkResources(teamLimits(ctx.config.quotas, team), cpuCount, memoryMB, "the template");
  const diskSizeMB = ctx.config.diskSizeMB;

  if ((await getTeamTemplateByName(ctx.db, team.team_id, ref.name))?.snapshot) {
    throw new ConflictError(
      `${field}: '${ref.name}' is the name of a snapshot of your team; choose another name (or delete the snapshot)`,
    );
  }
  const template = await ctx.db.transaction().execute(async (tx) => {
    const row = await upsertTemplateForBuild(tx, {
      templateID: newTemplateID(),
      teamID: team.team_id,
      name: ref.name,
      cpuCount,
      memoryMB,
      diskSizeMB,
    });
    await supersedeUnstartedBuilds(tx, row.template_id, buildID);
    await insertBuild(tx, { buildID, templateID: row.template_id, cpuCount, memoryMB, diskSizeMB });
    await assignTags(tx, row.template_id, buildID, tags);
    return row;
  });
  ctx.logger.info(
    { templateID: template.template_id, buildID, teamID: team.team_id, name: ref.name, tags },
    "template build requested",
  );
  return {
    templateID: template.template_id,
    buildID,
    public: template.public,
    ...templateNames(team, template.name),
    tags: tags.length > 0 ? tags : [DEFAULT_TAG],
  };
}
