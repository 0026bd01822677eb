/**
 * Volumes on any node: a volume lives on one node at a time (`volumes.node_id`), and with a shared
 * artifact store it can move to another when no sandbox mounts it. The move is decided under the
 * team's lock, which every create that mounts the volume and every delete of it also takes: the
 * record names the new node and the next generation before either node is asked, and a create that
 * resolved the old node stops at its own check under the lock (checkMountsStillReady). The old node
 * then publishes the image and removes it (refusing while a sandbox of its own mounts it), and the
 * new node takes it: one node at a time holds, and mounts, a volume's ext4 image.
 *
 * A create moves its volumes when they cannot start with it where they are: the template's build
 * is on another node, or their node is out of service by the registry's word (draining).
 */
import type { APIContext } from "../context.js";
import type { SandboxVolumeMount, VolumeRow } from "../db/schema.js";
import { getTeamVolume, sandboxesMounting } from "../db/volumes.js";
import { ConflictError, InvalidRequestError } from "../errors.js";
import type { NodeClient } from "../orchestrator/node-client.js";
import { placeSandbox } from "../placement/placement.js";
import { withTeamLock } from "../quotas/reserve.js";
import { nodeGone } from "../sandbox/nodes.js";
import { NodeVolumes } from "./node-volumes.js";

/**
 * Where a create's volumes must move to start with it, or undefined when they stay: `pinnedNodeID`
 * is the node the template's build lives on (null: any node).
 */
export function volumeMoveTarget(
  ctx: Pick<APIContext, "nodes" | "placement">,
  volumeNodeID: string | undefined,
  pinnedNodeID: string | null,
): NodeClient | undefined {
  if (volumeNodeID === undefined) return undefined;
  const home = ctx.nodes.get(volumeNodeID);
  // A node the API cannot call cannot give its volumes away.
  if (!home) return undefined;
  if (pinnedNodeID !== null && pinnedNodeID !== volumeNodeID) return ctx.nodes.get(pinnedNodeID);
  if (!nodeGone(home)) return undefined;
  const usable = [...ctx.nodes.values()].filter((n) => !nodeGone(n));
  return placeSandbox(ctx.placement, usable, new Set([volumeNodeID]));
}

/** Moves the volumes of `mounts` (all on node `from`) to `to`; see the file comment. */
export async function moveVolumes(
  ctx: APIContext,
  teamID: string,
  mounts: readonly SandboxVolumeMount[],
  from: string,
  to: NodeClient,
): Promise<void> {
  const source = ctx.nodes.get(from);
  if (!source) throw new ConflictError(`node '${from}', which holds the volumes, is not configured`);
  const moving = await withTeamLock(ctx, teamID, async (tx) => {
    const rows: VolumeRow[] = [];
    for (const m of mounts) {
      const row = await getTeamVolume(tx, teamID, m.volumeID);
      if (!row) throw new InvalidRequestError(`volumeMounts: volume '${m.name}' is being deleted`);
      if (row.node_id !== from) throw new ConflictError(`volume '${m.name}' moved meanwhile; retry`);
      const users = await sandboxesMounting(tx, teamID, m.volumeID);
      if (users.length > 0) {
        throw new ConflictError(
          `volume '${m.name}' is on node '${from}' and mounted by sandbox${users.length > 1 ? "es" : ""} ${users.join(", ")}; a sandbox that mounts it starts on node '${to.id}' only once ${users.length > 1 ? "they are" : "it is"} killed`,
        );
      }
      const moved = await tx
        .updateTable("volumes")
        .set({ node_id: to.id, artifact_generation: row.artifact_generation + 1 })
        .where("volume_id", "=", row.volume_id)
        .where("node_id", "=", from)
        .returningAll()
        .executeTakeFirstOrThrow();
      rows.push(moved);
    }
    return rows;
  });
  const back = (row: VolumeRow) =>
    ctx.db
      .updateTable("volumes")
      .set({ node_id: from })
      .where("volume_id", "=", row.volume_id)
      .where("node_id", "=", to.id)
      .execute();
  for (const row of moving) {
    const log = ctx.logger.child({
      volumeID: row.volume_id,
      from,
      to: to.id,
      generation: row.artifact_generation,
    });
    try {
      await new NodeVolumes(source, row).release(row.artifact_generation);
    } catch (err) {
      // Still whole on its node: it stays there.
      await back(row);
      for (const later of moving.slice(moving.indexOf(row) + 1)) await back(later);
      throw err;
    }
    try {
      await new NodeVolumes(to, row).create(row.size_mb, row.artifact_generation);
    } catch (err) {
      log.error({ err }, "the new node could not take a moved volume; giving it back to its node");
      // Its image is in the store: the old node takes it back.
      await new NodeVolumes(source, row).create(row.size_mb, row.artifact_generation).then(
        () => back(row),
        (backErr: unknown) =>
          log.error({ err: backErr }, "the old node could not take the volume back; it waits in the store"),
      );
      for (const later of moving.slice(moving.indexOf(row) + 1)) await back(later);
      throw err;
    }
    log.info("volume moved");
  }
}
