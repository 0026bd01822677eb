/**
 * Deleting a template (DELETE /templates/{id}): refused while sandboxes started from it live
 * (running or paused: a resume needs its build). Its builds running here are cancelled, its
 * records go (builds, logs, tags), and each node drops the ready builds it has; a node that cannot
 * be reached keeps its copy, which nothing references any more.
 */
import type { APIContext } from "../context.js";
import { countTemplateSandboxes } from "../db/sandboxes.js";
import type { TeamRow } from "../db/schema.js";
import { listReadyBuilds } from "../db/template-builds.js";
import { deleteTemplate as deleteTemplateRow } from "../db/templates.js";
import { ConflictError, TemplateNotFoundError } from "../errors.js";
import { LIVE_STATES } from "../sandbox/states.js";
import { deleteSnapshot } from "../snapshot/delete.js";
import { findOwnTemplate } from "./resolve.js";

export async function deleteTemplate(ctx: APIContext, team: TeamRow, templateRef: string): Promise<void> {
  const template = await findOwnTemplate(ctx.db, team, templateRef);
  // Sandboxes from a snapshot have their own copies of it: it goes whatever runs.
  if (template.snapshot) return deleteSnapshot(ctx, team, template);
  const templateID = template.template_id;
  const live = await countTemplateSandboxes(ctx.db, templateID, LIVE_STATES);
  if (live > 0) {
    throw new ConflictError(
      `template '${templateRef}' is used by ${live} running or paused sandbox${live === 1 ? "" : "es"}; kill them first`,
    );
  }
  const ready = await listReadyBuilds(ctx.db, templateID);
  await ctx.builds.cancelTemplate(templateID);
  if (!(await deleteTemplateRow(ctx.db, templateID))) throw new TemplateNotFoundError(templateRef);
  ctx.logger.info({ templateID, teamID: team.team_id, builds: ready.length }, "template deleted");
  await Promise.all(
    ready.map(async (build) => {
      const node = build.node_id === null ? undefined : ctx.nodes.get(build.node_id);
      try {
        await node?.deleteBuild(build.build_id);
      } catch (err) {
        ctx.logger.warn(
          { err, buildID: build.build_id, nodeID: build.node_id },
          "node kept a deleted template's build",
        );
      }
    }),
  );
}
