/**
 * Snapshots an API process began and never finished (it stopped while the node took them): their
 * build stays `waiting`. Once older than any node call may last, the node's copy (if it made one)
 * and the record are removed, so they neither hold the team's quota nor the node's disk.
 */
import type { APIContext } from "../context.js";
import { dropSnapshotBuild, listUnfinishedSnapshots } from "../db/snapshots.js";

/** Longer than a Snapshot call may take (the nodes' transition deadline). */
export const UNFINISHED_SNAPSHOT_AGE_MS = 10 * 60_000;

export async function sweepUnfinishedSnapshots(
  ctx: Pick<APIContext, "db" | "nodes" | "logger">,
  before = new Date(Date.now() - UNFINISHED_SNAPSHOT_AGE_MS),
): Promise<string[]> {
  const removed: string[] = [];
  for (const build of await listUnfinishedSnapshots(ctx.db, before)) {
    const node = build.node_id === null ? undefined : ctx.nodes.get(build.node_id);
    try {
      await node?.deleteSnapshot(build.build_id);
    } catch (err) {
      ctx.logger.warn(
        { err, buildID: build.build_id },
        "could not remove an unfinished snapshot; trying again later",
      );
      continue;
    }
    await dropSnapshotBuild(ctx.db, build.template_id, build.build_id);
    removed.push(build.build_id);
  }
  if (removed.length > 0) ctx.logger.warn({ buildIDs: removed }, "unfinished snapshots removed");
  return removed;
}
