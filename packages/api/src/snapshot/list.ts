/**
 * Pages of a team's snapshots (GET /snapshots), newest first; filtered by the sandbox they were
 * taken from and by name (`name`, `team/name`, `name:tag` or a template id, as creates take it).
 */
import type { APIContext } from "../context.js";
import type { TeamRow } from "../db/schema.js";
import { listTeamSnapshots } from "../db/snapshots.js";
import { isOwnNamespace, tryParseTemplateReference } from "../template/names.js";
import type { SnapshotView } from "./create.js";
import { snapshotInfo } from "./names.js";

export interface SnapshotQuery {
  sandboxID?: string;
  name?: string;
  limit: number;
  after?: { time: Date; id: string };
}

export async function listSnapshots(
  ctx: APIContext,
  team: TeamRow,
  query: SnapshotQuery,
): Promise<{ snapshots: SnapshotView[]; next?: { time: Date; id: string } }> {
  let nameOrID: string | undefined;
  let tag: string | undefined;
  if (query.name !== undefined) {
    const ref = tryParseTemplateReference(query.name);
    // Nothing can have a name no template may have, nor another team's namespace.
    if (!ref || !isOwnNamespace(team, ref.namespace)) return { snapshots: [] };
    nameOrID = ref.name;
    tag = ref.tag;
  }
  // One row more than the page tells whether another page follows.
  const rows = await listTeamSnapshots(
    ctx.db,
    { teamID: team.team_id, sandboxID: query.sandboxID, nameOrID },
    { limit: query.limit + 1, after: query.after },
  );
  const page = rows.slice(0, query.limit);
  const last = page.at(-1)?.template;
  return {
    snapshots: page
      .filter((r) => tag === undefined || r.tag === tag)
      .map((r) => snapshotInfo(team, r.template, r.tag)),
    ...(rows.length > query.limit && last ? { next: { time: last.created_at, id: last.template_id } } : {}),
  };
}
