/**
 * Taking a snapshot of a running sandbox (POST /sandboxes/{id}/snapshots). The snapshot is a
 * template of the team (marked snapshot) with one build per snapshot, on the node of the sandbox:
 * a name the team's snapshots already have gets a new build (E2B's rule; the name then means the
 * newest), a name of one of its built templates is a 409. The build is recorded `waiting` under
 * the team's lock, where its quota (maxSnapshots) and the name are checked, before the node is
 * asked; it becomes ready once the node has the snapshot, and is removed when the node failed.
 */
import { randomUUID } from "node:crypto";
import type { APIContext } from "../context.js";
import { getTeamSandbox } from "../db/sandboxes.js";
import type { SandboxRow, TeamRow } from "../db/schema.js";
import {
  countTeamSnapshots,
  dropSnapshotBuild,
  markSnapshotReady,
  reserveSnapshot,
} from "../db/snapshots.js";
import { getTeamTemplateByName } from "../db/templates.js";
import {
  ConflictError,
  QuotaExceededError,
  SandboxConflictError,
  SandboxNotFoundError,
  SnapshotFailedError,
} from "../errors.js";
import {
  NodeSandboxNotFoundError,
  NodeSnapshotFailedError,
  NodeTransitionError,
} from "../orchestrator/node-client.js";
import { withTeamLock } from "../quotas/reserve.js";
import { newTemplateID } from "../sandbox/ids.js";
import { logSandbox, markKilled } from "../sandbox/lifecycle.js";
import { nodeOf } from "../sandbox/nodes.js";
import { LIVE_STATES, stateConflict } from "../sandbox/states.js";
import { parseSnapshotName, type SnapshotName, snapshotInfo } from "./names.js";

export interface SnapshotView {
  snapshotID: string;
  names: string[];
}

export async function createSnapshot(
  ctx: APIContext,
  team: TeamRow,
  sandboxID: string,
  name: string | undefined,
): Promise<SnapshotView> {
  const parsed = name === undefined ? undefined : parseSnapshotName(team, name);
  const row = await runningSource(ctx, team.team_id, sandboxID, "take a snapshot of");
  // A snapshot outlives the volumes its source mounts, and its memory expects them at their paths:
  // sandboxes from it could not restore without them, nor hold them as mounts of their own.
  if (row.volume_mounts?.length) {
    throw new ConflictError(
      `sandbox ${sandboxID} mounts volumes (${row.volume_mounts.map((m) => m.name).join(", ")}): a snapshot ` +
        "cannot hold volume mounts. Take it of a sandbox without volumes, or fork this one instead",
    );
  }
  const buildID = randomUUID();
  const template = await withTeamLock(ctx, team.team_id, async (tx, _team, limits) => {
    const held = await countTeamSnapshots(tx, team.team_id);
    if (held >= limits.maxSnapshots) {
      throw new QuotaExceededError(
        `you have reached the maximum number of snapshots (${limits.maxSnapshots}). Delete snapshots you ` +
          "no longer need (Sandbox.deleteSnapshot), or ask the operator of this moat to raise the team's maxSnapshots",
      );
    }
    const templateID = newTemplateID();
    const reserved = await reserveSnapshot(tx, {
      templateID,
      teamID: team.team_id,
      name: parsed?.name ?? templateID,
      buildID,
      sourceSandboxID: row.sandbox_id,
      nodeID: row.node_id,
      cpuCount: row.cpu_count,
      memoryMB: row.memory_mb,
      diskSizeMB: row.disk_size_mb,
      tags: parsed?.tag !== undefined ? [parsed.tag] : [],
    });
    if (!reserved) throw nameTaken(parsed!);
    return reserved;
  });
  try {
    await nodeOf(ctx, row).snapshot(row.sandbox_id, buildID);
  } catch (err) {
    await dropSnapshotBuild(ctx.db, template.template_id, buildID);
    throw await sourceError(ctx, row, err);
  }
  if (!(await markSnapshotReady(ctx.db, buildID, row.envd_version))) {
    // The template was deleted meanwhile: the node's copy goes too.
    await nodeOf(ctx, row)
      .deleteSnapshot(buildID)
      .catch(() => undefined);
    throw new ConflictError(
      `the snapshot '${name ?? template.template_id}' was deleted while it was being taken`,
    );
  }
  ctx.logger.info(
    { sandboxID, teamID: team.team_id, templateID: template.template_id, buildID },
    "snapshot taken",
  );
  await logSandbox(ctx, row, "info", "snapshot taken", { snapshotID: template.template_id });
  const current = await getTeamTemplateByName(ctx.db, team.team_id, template.name);
  return snapshotInfo(team, current ?? template, parsed?.tag);
}

function nameTaken(name: SnapshotName): ConflictError {
  return new ConflictError(
    `name '${name.name}' is taken by a template of your team; choose another name for the snapshot ` +
      "(or delete that template)",
  );
}

/**
 * The team's sandbox a snapshot or fork is taken from: running, else 404 (missing, killed or
 * another team's) or 409 (paused: resume it first; between states: try again).
 */
export async function runningSource(
  ctx: APIContext,
  teamID: string,
  sandboxID: string,
  what: string,
): Promise<SandboxRow> {
  const row = await getTeamSandbox(ctx.db, teamID, sandboxID, LIVE_STATES);
  if (!row) throw new SandboxNotFoundError(sandboxID);
  if (row.state === "paused") {
    throw new SandboxConflictError(
      sandboxID,
      "paused",
      `sandbox '${sandboxID}' is paused: resume it (Sandbox.connect) before you ${what} it`,
    );
  }
  if (row.state !== "running") throw stateConflict(sandboxID, row.state);
  return row;
}

/** What the client hears when the node could not snapshot the source. */
export async function sourceError(ctx: APIContext, row: SandboxRow, err: unknown): Promise<Error> {
  const sandboxID = row.sandbox_id;
  if (err instanceof NodeSandboxNotFoundError) {
    await markKilled(ctx, sandboxID, "missing on node");
    return new SandboxNotFoundError(sandboxID);
  }
  // Being paused or snapshotted already on the node: a moment later it works.
  if (err instanceof NodeTransitionError) return stateConflict(sandboxID, "running");
  if (err instanceof NodeSnapshotFailedError) return new SnapshotFailedError(err.message);
  return err instanceof Error ? err : new Error(String(err));
}
