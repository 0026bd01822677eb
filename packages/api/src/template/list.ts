/** Pages of a team's templates as E2B lists them, each with its latest and latest ready build. */
import type { APIContext } from "../context.js";
import type { TeamRow } from "../db/schema.js";
import { latestBuilds } from "../db/template-builds.js";
import { listTeamTemplates } from "../db/templates.js";
import { encodePageCursor } from "../http/page-cursor.js";
import { type TemplateView, templateView } from "../http/template-views.js";

export async function listTemplatesPage(
  ctx: APIContext,
  team: TeamRow,
  page: { limit: number; after?: { time: Date; id: string } },
): Promise<{ templates: TemplateView[]; nextToken?: string }> {
  // One row more than the page tells whether another page follows.
  const rows = await listTeamTemplates(ctx.db, team.team_id, { ...page, limit: page.limit + 1 });
  const templates = rows.slice(0, page.limit);
  const ids = templates.map((t) => t.template_id);
  const [latest, ready] = await Promise.all([latestBuilds(ctx.db, ids), latestBuilds(ctx.db, ids, "ready")]);
  const last = templates.at(-1);
  return {
    templates: templates.map((t) =>
      templateView(team, t, latest.get(t.template_id), ready.get(t.template_id)),
    ),
    ...(rows.length > page.limit && last
      ? { nextToken: encodePageCursor({ time: last.created_at, id: last.template_id }) }
      : {}),
  };
}
