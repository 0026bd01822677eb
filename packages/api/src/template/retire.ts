/**
 * Retiring superseded builds. Every rebuild of a template leaves the previous build's snapshot and
 * layers on its node, and nothing can start from that build once a newer one is ready and no tag
 * names it (creates take the latest ready build or a tag's). So the build sweep tells the node to
 * drop such builds; the node keeps whatever layers other builds or live sandboxes still use, so
 * sandboxes already running or paused on a retired build carry on. The row stays as history.
 * The node is told first: a node that cannot be reached is asked again at the next sweep.
 */
import type { Logger } from "@moat/shared";
import type { DB } from "../db/database.js";
import { listRetirableBuilds, markBuildRetired } from "../db/template-builds.js";
import type { NodeClient } from "../orchestrator/node-client.js";

/**
 * How long a build stays after a newer one is ready: a create that resolved it just before is
 * given time to reach its node.
 */
export const RETIRE_AFTER_MS = 5 * 60_000;

export interface RetireDeps {
  db: DB;
  nodes: ReadonlyMap<string, NodeClient>;
  logger: Logger;
}

/** Retires the builds superseded before `supersededBefore`; answers the ids retired. */
export async function retireSupersededBuilds(deps: RetireDeps, supersededBefore: Date): Promise<string[]> {
  const retired: string[] = [];
  for (const build of await listRetirableBuilds(deps.db, supersededBefore)) {
    const log = deps.logger.child({ templateID: build.template_id, buildID: build.build_id });
    const node = build.node_id === null ? undefined : deps.nodes.get(build.node_id);
    try {
      // A node this API no longer knows has nothing to be told; the record is settled anyway.
      // A snapshot's build (a name given to a newer snapshot) is a snapshot on its node.
      if (build.source_sandbox_id) await node?.deleteSnapshot(build.build_id);
      else await node?.deleteBuild(build.build_id);
    } catch (err) {
      log.warn(
        { err, nodeID: build.node_id },
        "could not retire a superseded build on its node; trying again later",
      );
      continue;
    }
    if (await markBuildRetired(deps.db, build.build_id)) {
      retired.push(build.build_id);
      log.info({ nodeID: build.node_id }, "superseded template build retired");
    }
  }
  return retired;
}
