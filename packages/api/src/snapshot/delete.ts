/**
 * Deleting a snapshot (DELETE /templates/{id}, as the SDK's Sandbox.deleteSnapshot does it): every
 * build of the snapshot template goes from its node, then the records. Sandboxes started from it
 * carry on (each has its own copy of its files and memory).
 */
import type { APIContext } from "../context.js";
import type { TeamRow, TemplateRow } from "../db/schema.js";
import { deleteTemplate as deleteTemplateRow } from "../db/templates.js";
import { TemplateNotFoundError } from "../errors.js";

export async function deleteSnapshot(ctx: APIContext, team: TeamRow, template: TemplateRow): Promise<void> {
  const builds = await ctx.db
    .selectFrom("template_builds")
    .select(["build_id", "node_id"])
    .where("template_id", "=", template.template_id)
    .where("retired_at", "is", null)
    .execute();
  // The records go first: a create that resolves the snapshot now no longer finds it.
  if (!(await deleteTemplateRow(ctx.db, template.template_id)))
    throw new TemplateNotFoundError(template.name);
  ctx.logger.info(
    { templateID: template.template_id, teamID: team.team_id, builds: builds.length },
    "snapshot deleted",
  );
  await Promise.all(
    builds.map(async (build) => {
      const node = build.node_id === null ? undefined : ctx.nodes.get(build.node_id);
      try {
        await node?.deleteSnapshot(build.build_id);
      } catch (err) {
        ctx.logger.warn(
          { err, buildID: build.build_id, nodeID: build.node_id },
          "node kept a deleted snapshot's files",
        );
      }
    }),
  );
}
