/**
 * A team's volumes: create (one node holds it, picked as sandboxes are placed), list, get and
 * delete. Counted and named under the team's lock (quotas/reserve.ts), so maxVolumes and unique
 * names hold across API processes; a delete and a create that mounts the volume take the same
 * lock, so a volume is never deleted under a sandbox (running or paused) that mounts it.
 */
import type { APIContext } from "../context.js";
import type { TeamRow, VolumeRow } from "../db/schema.js";
import {
  countTeamVolumes,
  deleteVolumeRow,
  getTeamVolume,
  insertVolume,
  listTeamVolumes,
  sandboxesMounting,
  setVolumeState,
} from "../db/volumes.js";
import {
  CapacityError,
  ConflictError,
  InvalidRequestError,
  QuotaExceededError,
  VolumeNotFoundError,
} from "../errors.js";
import { placeSandbox } from "../placement/placement.js";
import { withTeamLock } from "../quotas/reserve.js";
import { newSandboxID } from "../sandbox/ids.js";
import { NodeVolumes } from "./node-volumes.js";

/** Volume names: what the SDK accepts (letters, digits, '-' and '_'). */
export const VOLUME_NAME = /^[A-Za-z0-9_-]{1,64}$/;

export interface VolumeInfo {
  row: VolumeRow;
  token: string;
  /** Bytes in use on the volume's file system; undefined when its node did not answer. */
  usedBytes?: number;
}

export async function createVolume(ctx: APIContext, team: TeamRow, name: string): Promise<VolumeInfo> {
  if (!VOLUME_NAME.test(name)) {
    throw new InvalidRequestError(
      `volume name '${name}' is not valid: use 1 to 64 letters, digits, '-' or '_'`,
    );
  }
  const node = placeSandbox(ctx.placement, [...ctx.nodes.values()], new Set());
  if (!node) throw new CapacityError("no node is available to hold the volume");
  const volumeID = newSandboxID();
  const row = await withTeamLock(ctx, team.team_id, async (tx, _team, limits) => {
    if ((await countTeamVolumes(tx, team.team_id)) >= limits.maxVolumes) {
      throw new QuotaExceededError(
        `you have reached the maximum number of volumes (${limits.maxVolumes}); delete volumes you no longer need, or ask the operator of this moat to raise the team's maxVolumes`,
      );
    }
    const clash = await tx
      .selectFrom("volumes")
      .select(["state", "volume_id"])
      .where("team_id", "=", team.team_id)
      .where("name", "=", name)
      .executeTakeFirst();
    if (clash) {
      // A create or delete that was cut short (the node unreachable, the API stopped) left the
      // name taken by a volume nobody sees: its id says how to free it.
      const CLASHES: Record<VolumeRow["state"], string> = {
        ready: `a volume named '${name}' already exists in this team; pick another name or use Volume.connect`,
        creating: `volume '${name}' (${clash.volume_id}) is being created, or its creation was cut short; retry in a moment, or delete it (DELETE /volumes/${clash.volume_id}) and create it again`,
        deleting: `volume '${name}' (${clash.volume_id}) is being deleted; delete it again (DELETE /volumes/${clash.volume_id}) to finish, then create it`,
      };
      throw new ConflictError(CLASHES[clash.state]);
    }
    const values = {
      volume_id: volumeID,
      team_id: team.team_id,
      name,
      node_id: node.id,
      size_mb: limits.volumeSizeMB,
      state: "creating" as const,
    };
    await insertVolume(tx, values);
    return values;
  });
  const onNode = new NodeVolumes(node, row);
  try {
    await onNode.create(row.size_mb);
  } catch (err) {
    await onNode.delete().catch(() => undefined);
    await deleteVolumeRow(ctx.db, volumeID);
    throw err;
  }
  await setVolumeState(ctx.db, volumeID, ["creating"], "ready");
  const created = await getTeamVolume(ctx.db, team.team_id, volumeID);
  if (!created) throw new VolumeNotFoundError(`volume '${name}' was deleted while it was being created`);
  ctx.logger.info({ teamID: team.team_id, volumeID, name, nodeID: node.id }, "volume created");
  return { row: created, token: await ctx.volumeTokens.token(volumeID) };
}

export function listVolumes(ctx: APIContext, team: TeamRow): Promise<VolumeRow[]> {
  return listTeamVolumes(ctx.db, team.team_id);
}

/** The team's volume with its token, and its use when the node answers. */
export async function getVolumeInfo(ctx: APIContext, team: TeamRow, volumeID: string): Promise<VolumeInfo> {
  const row = await getTeamVolume(ctx.db, team.team_id, volumeID);
  if (!row) throw new VolumeNotFoundError(`volume '${volumeID}' not found`);
  const usage = await NodeVolumes.of(ctx, row)
    .usage()
    .catch((err: unknown) => {
      ctx.logger.warn({ err, volumeID }, "could not read a volume's use from its node");
      return undefined;
    });
  return {
    row,
    token: await ctx.volumeTokens.token(volumeID),
    ...(usage ? { usedBytes: Number(usage.usedBytes) } : {}),
  };
}

/**
 * Deletes the volume and its files: 409 while a sandbox of the team that is not killed (running,
 * paused, on its way) mounts it. A delete cut short (the node unreachable) leaves it `deleting`,
 * hidden, and the next DELETE finishes it.
 */
export async function deleteVolume(ctx: APIContext, team: TeamRow, volumeID: string): Promise<void> {
  const row = await withTeamLock(ctx, team.team_id, async (tx) => {
    const found = await getTeamVolume(tx, team.team_id, volumeID, ["ready", "creating", "deleting"]);
    if (!found) throw new VolumeNotFoundError(`volume '${volumeID}' not found`);
    const users = await sandboxesMounting(tx, team.team_id, volumeID);
    if (users.length > 0) {
      throw new ConflictError(
        `volume '${found.name}' is mounted by sandbox${users.length > 1 ? "es" : ""} ${users.join(", ")} (running or paused); kill ${users.length > 1 ? "them" : "it"} before deleting the volume`,
      );
    }
    await setVolumeState(tx, volumeID, ["ready", "creating", "deleting"], "deleting");
    return found;
  });
  try {
    await NodeVolumes.of(ctx, row).delete();
  } catch (err) {
    // The node still has a sandbox on it (one the API no longer counts): the volume stays.
    if (err instanceof ConflictError) await setVolumeState(ctx.db, volumeID, ["deleting"], "ready");
    throw err;
  }
  await deleteVolumeRow(ctx.db, volumeID);
  ctx.logger.info({ teamID: team.team_id, volumeID, name: row.name }, "volume deleted");
}
