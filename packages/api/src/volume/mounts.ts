/**
 * A create's `volumeMounts`: each path checked (shared/volume-mounts.ts: absolute, normalised, not
 * over what moat needs, no path or volume twice), each name resolved to a ready volume of the
 * caller's team (another team's volume of that name is as absent as a missing one), and the node
 * they live on, where the sandbox must start.
 */
import { volumeMountsProblem } from "@moat/shared";
import type { DB } from "../db/database.js";
import type { SandboxVolumeMount } from "../db/schema.js";
import { teamVolumesByName } from "../db/volumes.js";
import { ConflictError, InvalidRequestError } from "../errors.js";

export interface ResolvedMounts {
  mounts: SandboxVolumeMount[];
  /** The node holding the volumes; undefined without mounts. */
  nodeID: string | undefined;
}

export async function resolveVolumeMounts(
  db: DB,
  teamID: string,
  requested: ReadonlyArray<{ name: string; path: string }>,
): Promise<ResolvedMounts> {
  if (requested.length === 0) return { mounts: [], nodeID: undefined };
  const problem = volumeMountsProblem(requested);
  if (problem) throw new InvalidRequestError(`volumeMounts: ${problem}`);
  const rows = await teamVolumesByName(
    db,
    teamID,
    requested.map((m) => m.name),
  );
  const byName = new Map(rows.map((r) => [r.name, r]));
  const mounts: SandboxVolumeMount[] = [];
  for (const { name, path } of requested) {
    const row = byName.get(name);
    if (!row) {
      throw new InvalidRequestError(
        `volumeMounts: volume '${name}' not found in this team; create it first (Volume.create('${name}'))`,
      );
    }
    mounts.push({ name, path, volumeID: row.volume_id });
  }
  const nodes = [...new Set(rows.map((r) => r.node_id))];
  if (nodes.length > 1) {
    throw new InvalidRequestError(
      `volumeMounts: these volumes live on different nodes (${nodes.join(", ")}); a sandbox mounts volumes of one node`,
    );
  }
  return { mounts, nodeID: nodes[0] };
}

/**
 * Under the team's lock, as the sandbox's record is written: its volumes are all still ready (a
 * delete that won the lock first has marked its volume `deleting`, and then the create stops here)
 * and still on `nodeID`, where the sandbox is about to start (a move that won the lock first has
 * given them to another node: volume/move.ts).
 */
export async function checkMountsStillReady(
  db: DB,
  teamID: string,
  mounts: SandboxVolumeMount[],
  nodeID?: string,
): Promise<void> {
  if (mounts.length === 0) return;
  const rows = await teamVolumesByName(
    db,
    teamID,
    mounts.map((m) => m.name),
  );
  const ready = new Map(rows.map((r) => [r.volume_id, r]));
  const gone = mounts.find((m) => !ready.has(m.volumeID));
  if (gone) throw new InvalidRequestError(`volumeMounts: volume '${gone.name}' is being deleted`);
  const moved = mounts.find((m) => nodeID !== undefined && ready.get(m.volumeID)?.node_id !== nodeID);
  if (moved) throw new ConflictError(`volume '${moved.name}' moved to another node meanwhile; retry`);
}
