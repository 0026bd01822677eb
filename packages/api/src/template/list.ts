/** Pages of a team's templates as E2B lists them, each with its latest and latest ready build. */
import type { APIContext } from "../context.js";
import type { TeamRow, TemplateBuildRow, TemplateRow } from "../db/schema.js";
import { latestBuilds } from "../db/template-builds.js";
import { listTeamTemplates } from "../db/templates.js";

/** A position in the list, newest first: the page after it starts past this template. */
export interface TemplatePosition {
  time: Date;
  id: string;
}

export interface ListedTemplate {
  template: TemplateRow;
  /** Its latest build, and its latest ready one (undefined while there is none). */
  latest: TemplateBuildRow | undefined;
  ready: TemplateBuildRow | undefined;
}

export async function listTemplatesPage(
  ctx: APIContext,
  team: TeamRow,
  page: { limit: number; after?: TemplatePosition | undefined },
): Promise<{ templates: ListedTemplate[]; next?: TemplatePosition }> {
  // One row more than the page tells whether another page follows.
  const rows = await listTeamTemplates(ctx.db, team.team_id, { ...page, limit: page.limit + 1 });
  const templates = rows.slice(0, page.limit);
  const ids = templates.map((t) => t.template_id);
  const [latest, ready] = await Promise.all([latestBuilds(ctx.db, ids), latestBuilds(ctx.db, ids, "ready")]);
  const last = templates.at(-1);
  return {
    templates: templates.map((t) => ({
      template: t,
      latest: latest.get(t.template_id),
      ready: ready.get(t.template_id),
    })),
    ...(rows.length > page.limit && last ? { next: { time: last.created_at, id: last.template_id } } : {}),
  };
}
