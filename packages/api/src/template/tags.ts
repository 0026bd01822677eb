/**
 * Tags name builds: `name:tag` in a sandbox create or a `fromTemplate` starts from the ready build
 * the tag was given to last. `default` is not given or taken: it always names the latest ready
 * build.
 */
import type { APIContext } from "../context.js";
import type { TeamRow } from "../db/schema.js";
import { latestReadyBuild } from "../db/template-builds.js";
import { assignTags, deleteTags, listReadyTags } from "../db/template-tags.js";
import { InvalidRequestError, TemplateNotFoundError } from "../errors.js";
import { DEFAULT_TAG, isOwnNamespace, parseTemplateReference, validateTags } from "./names.js";
import { findOwnTemplate, lookupTemplate, readyBuildOf } from "./resolve.js";

/** Gives `tags` to the build `target` ("name" or "name:tag") names; answers that build. */
export async function assignTemplateTags(
  ctx: APIContext,
  team: TeamRow,
  target: string,
  rawTags: string[],
): Promise<{ buildID: string; tags: string[] }> {
  const tags = checkTags(rawTags);
  const ref = parseTemplateReference(target, "target");
  const template = isOwnNamespace(team, ref.namespace) ? await lookupTemplate(ctx.db, team, ref) : undefined;
  if (!template || template.team_id !== team.team_id) throw new TemplateNotFoundError(target);
  const build = await readyBuildOf(ctx.db, template, ref.tag);
  if (!build) {
    throw new TemplateNotFoundError(
      target,
      `template '${target}' has no ready build${ref.tag === undefined ? "" : ` tagged '${ref.tag}'`}`,
    );
  }
  await assignTags(ctx.db, template.template_id, build.build_id, tags);
  return { buildID: build.build_id, tags };
}

/** Takes `tags` from the template `name` (every build they were given to). */
export async function removeTemplateTags(
  ctx: APIContext,
  team: TeamRow,
  name: string,
  rawTags: string[],
): Promise<void> {
  const tags = checkTags(rawTags);
  const ref = parseTemplateReference(name, "name");
  if (ref.tag !== undefined || name.includes(":")) {
    throw new InvalidRequestError("name: give the template's name without a tag; the tags go in tags");
  }
  const template = isOwnNamespace(team, ref.namespace) ? await lookupTemplate(ctx.db, team, ref) : undefined;
  if (!template || template.team_id !== team.team_id) throw new TemplateNotFoundError(name);
  await deleteTags(ctx.db, template.template_id, tags);
}

/** The template's tags with the ready builds they name, `default` (the latest ready build) first. */
export async function listTemplateTags(
  ctx: APIContext,
  team: TeamRow,
  templateRef: string,
): Promise<Array<{ tag: string; buildID: string; createdAt: string }>> {
  const template = await findOwnTemplate(ctx.db, team, templateRef);
  const latest = await latestReadyBuild(ctx.db, template.template_id);
  const tags = await listReadyTags(ctx.db, template.template_id);
  return [
    ...(latest
      ? [
          {
            tag: DEFAULT_TAG,
            buildID: latest.build_id,
            createdAt: (latest.finished_at ?? latest.created_at).toISOString(),
          },
        ]
      : []),
    ...tags.map((t) => ({ tag: t.tag, buildID: t.build_id, createdAt: t.created_at.toISOString() })),
  ];
}

function checkTags(raw: string[]): string[] {
  const tags = validateTags(raw);
  if (tags.length === 0) throw new InvalidRequestError("tags: at least one tag is required");
  if (tags.includes(DEFAULT_TAG)) {
    throw new InvalidRequestError(
      `tags: '${DEFAULT_TAG}' always names the latest ready build; it is not given or taken`,
    );
  }
  return tags;
}
