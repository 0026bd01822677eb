/**
 * Creating a sandbox: resolve the template, record the sandbox as starting, place it on a node and
 * have that node start it with its end time, then record it running. A node that is full or
 * unreachable, or that stops the sandbox (its FAILED or KILLED event) while it is creating it, is
 * skipped for the next one (up to MAX_PLACEMENT_ATTEMPTS); any other failure ends the create, and
 * the record is closed as killed with the reason. A template build lives on the
 * node that built it, so its sandboxes go there only.
 *
 * The record is written before the node is asked, so that a node reconcile never mistakes a
 * sandbox being created for an orphan, and so that the proxy can answer "starting" for it. It is
 * written under the team's lock after counting its running sandboxes (quotas/reserve.ts): the
 * team's maxSandboxes holds however many creates race, in however many API processes.
 */
import { annotateActiveSpan, inSpan } from "@moat/shared/telemetry";
import type { APIContext } from "../context.js";
import { insertSandbox, updateSandbox } from "../db/sandboxes.js";
import type {
  NewSandboxRow,
  SandboxNetworkRecord,
  SandboxRow,
  SandboxVolumeMount,
  TeamRow,
} from "../db/schema.js";
import { recordSpawn } from "../db/templates.js";
import { CapacityError, InvalidRequestError, TemplateNotFoundError } from "../errors.js";
import { takesPlacements } from "../nodes/info.js";
import {
  NodeBusyError,
  type NodeClient,
  NodeRejectedError,
  NodeUnavailableError,
} from "../orchestrator/node-client.js";
import { MAX_PLACEMENT_ATTEMPTS, type PlacementRequest, placeSandbox } from "../placement/placement.js";
import { checkResources } from "../quotas/check.js";
import type { TeamLimits } from "../quotas/limits.js";
import { takeRunningSlot } from "../quotas/reserve.js";
import { checkMountsStillReady, resolveVolumeMounts } from "../volume/mounts.js";
import { moveVolumes, volumeMoveTarget } from "../volume/move.js";
import { newEnvdAccessToken, newSandboxID, newTrafficAccessToken } from "./ids.js";
import { logSandbox, markKilled } from "./lifecycle.js";
import { resolveTemplate, type Template } from "./templates.js";

export interface CreateSandboxInput {
  team: TeamRow;
  /** The team's limits (vCPUs and memory of the template are checked against them). */
  limits: TeamLimits;
  /** Template id or name (`name:tag`, `team/name`) as the client named it. */
  template: string;
  timeoutSeconds: number;
  metadata: Record<string, string>;
  envVars: Record<string, string>;
  /** null: the request did not say; the sandbox gets internet access. */
  allowInternetAccess: boolean | null;
  /** Issue an envd access token (always for v2 creates; v1 when `secure`). */
  secure: boolean;
  network: SandboxNetworkRecord | null;
  /** At the end time the node pauses the sandbox instead of killing it. */
  autoPause: boolean;
  /** With autoPause: keep its memory (false: only its files; its resume boots afresh). */
  autoPauseMemory: boolean;
  /** Traffic through the client proxy may resume it while paused. */
  autoResume: boolean;
  /** Volumes of the team to mount (by name), checked and resolved by volume/mounts.ts. */
  volumeMounts?: ReadonlyArray<{ name: string; path: string }>;
}

export async function createSandbox(ctx: APIContext, input: CreateSandboxInput): Promise<SandboxRow> {
  const template = await inSpan("api", "create.template", () =>
    resolveTemplate(ctx.db, input.team, input.template, ctx.config.diskSizeMB),
  );
  checkResources(input.limits, template.cpuCount, template.memoryMB, `template '${input.template}'`);
  const volumes = await resolveVolumeMounts(ctx.db, input.team.team_id, input.volumeMounts ?? []);
  const sandboxID = newSandboxID();
  annotateActiveSpan({ "moat.sandbox_id": sandboxID, "moat.team_id": input.team.team_id });
  // A snapshot's envd holds its source's token: a sandbox from it always gets one of its own.
  const envdAccessToken = input.secure || template.snapshot ? newEnvdAccessToken() : null;
  const trafficAccessToken = input.network?.allowPublicTraffic === false ? newTrafficAccessToken() : null;
  const log = ctx.logger.child({ sandboxID, teamID: input.team.team_id });
  let volumeNodeID = volumes.nodeID;
  const moveTo = volumeMoveTarget(ctx, volumeNodeID, template.nodeID);
  if (moveTo && volumeNodeID !== undefined) {
    await moveVolumes(ctx, input.team.team_id, volumes.mounts, volumeNodeID, moveTo);
    volumeNodeID = moveTo.id;
  }
  const nodes = candidateNodes(ctx, template, input.template, volumeNodeID);
  const tried = new Set<string>();
  let lastError: Error | undefined;
  /** What a node that stopped the sandbox mid-create may still hold of it (StoppedWhileCreatingError). */
  let leftover: (() => Promise<void>) | undefined;
  const dropLeftover = async () => {
    await leftover?.();
    leftover = undefined;
  };
  const placement: PlacementRequest = {
    cpuCount: template.cpuCount,
    memoryMB: template.memoryMB,
    ...(template.buildID ? { buildID: template.buildID } : {}),
  };

  for (let attempt = 0; attempt < MAX_PLACEMENT_ATTEMPTS; attempt++) {
    const node = placeSandbox(ctx.placement, nodes, tried, placement);
    if (!node) break;
    tried.add(node.id);
    let started = false;
    const now = new Date();
    const endAt = new Date(now.getTime() + input.timeoutSeconds * 1000);
    if (attempt === 0) {
      const record: NewSandboxRow = {
        sandbox_id: sandboxID,
        team_id: input.team.team_id,
        template_id: template.templateID,
        alias: template.alias,
        node_id: node.id,
        state: "starting",
        host_address: null,
        envd_version: null,
        envd_access_token: envdAccessToken,
        traffic_access_token: trafficAccessToken,
        metadata: JSON.stringify(input.metadata),
        cpu_count: template.cpuCount,
        memory_mb: template.memoryMB,
        disk_size_mb: template.diskSizeMB,
        allow_internet_access: input.allowInternetAccess,
        network: input.network ? JSON.stringify(input.network) : null,
        auto_pause: input.autoPause,
        auto_resume: input.autoResume,
        timeout_seconds: input.timeoutSeconds,
        started_at: now,
        end_at: endAt,
        volume_mounts: volumes.mounts.length > 0 ? JSON.stringify(volumes.mounts) : null,
        api_instance_id: ctx.instanceID,
      };
      try {
        // The team's quota checked and the sandbox recorded, in one transaction.
        await inSpan("api", "create.reserve", () =>
          takeRunningSlot(ctx, input.team.team_id, async (tx) => {
            await checkMountsStillReady(tx, input.team.team_id, volumes.mounts, volumeNodeID);
            await insertSandbox(tx, record);
          }),
        );
      } catch (err) {
        ctx.placement.finished?.(node.id, placement, false);
        throw err;
      }
    } else {
      await ctx.db
        .updateTable("sandboxes")
        .set({ node_id: node.id, started_at: now, end_at: endAt })
        .where("sandbox_id", "=", sandboxID)
        .execute();
      await dropLeftover();
    }
    try {
      const row = await startOnNode(
        ctx,
        node,
        sandboxID,
        input,
        template,
        envdAccessToken,
        endAt,
        volumes.mounts,
      );
      started = true;
      // The node logs the event with its timings; the team's view is the sandbox's log below.
      log.debug({ nodeID: node.id, attempt }, "sandbox created");
      if (template.buildID) await countSpawn(ctx, template);
      await logSandbox(ctx, row, "info", "sandbox created", {
        templateID: template.templateID,
        nodeID: node.id,
      });
      return row;
    } catch (err) {
      lastError = err as Error;
      if (err instanceof StoppedWhileCreatingError) leftover = err.leftover;
      if (
        err instanceof NodeBusyError ||
        err instanceof NodeUnavailableError ||
        err instanceof StoppedWhileCreatingError
      ) {
        log.warn({ err, nodeID: node.id, attempt }, "node could not take the sandbox; trying another");
        continue;
      }
      await markKilled(ctx, sandboxID, `create failed: ${lastError.message}`);
      await dropLeftover();
      if (err instanceof NodeRejectedError) {
        if (err.code === "not-found") throw new TemplateNotFoundError(input.template);
        throw new InvalidRequestError(err.message);
      }
      throw err;
    } finally {
      ctx.placement.finished?.(node.id, placement, started);
    }
  }
  if (tried.size > 0) await markKilled(ctx, sandboxID, `create failed: ${lastError?.message ?? "no node"}`);
  await dropLeftover();
  // Not a matter of capacity: every node tried stopped it.
  if (lastError instanceof StoppedWhileCreatingError) throw lastError;
  throw new CapacityError(
    lastError
      ? `no node can start the sandbox now (${lastError.message}); retry in a moment`
      : "no node is available to start the sandbox",
  );
}

/**
 * Every node for the base template; for a build, the node that has it, or every node when the
 * nodes share artifacts (any node fetches a build it lacks); with volumes, the node that holds
 * them (which must have the build, unless artifacts are shared).
 */
function candidateNodes(
  ctx: APIContext,
  template: Template,
  reference: string,
  volumeNodeID?: string,
): NodeClient[] {
  const shared = ctx.config.sharedArtifacts;
  if (volumeNodeID !== undefined) {
    if (!shared && template.nodeID !== null && template.nodeID !== volumeNodeID) {
      throw new InvalidRequestError(
        `template '${reference}' is on node '${template.nodeID}' and the volumes on node '${volumeNodeID}'; a sandbox starts where both are`,
      );
    }
    const node = ctx.nodes.get(volumeNodeID);
    if (!node) throw new CapacityError(`node '${volumeNodeID}', which holds the volumes, is not configured`);
    return [requireReady(node, "holds the volumes")];
  }
  if (template.nodeID === null || shared) return [...ctx.nodes.values()];
  const node = ctx.nodes.get(template.nodeID);
  if (!node) {
    throw new CapacityError(
      `node '${template.nodeID}', which has template '${reference}', is not configured`,
    );
  }
  return [requireReady(node, `has template '${reference}'`)];
}

/** The one node a create must go to, when it takes sandboxes (else 503 with its status). */
function requireReady(node: NodeClient, why: string): NodeClient {
  if (takesPlacements(node.info)) return node;
  throw new CapacityError(
    `node '${node.id}', which ${why}, is ${node.info.status} and takes no new sandboxes; retry once it is ready`,
  );
}

/** A template's spawn count and last spawn time; they inform, so a failure only logs. */
async function countSpawn(ctx: APIContext, template: Template): Promise<void> {
  await recordSpawn(ctx.db, template.templateID).catch((err: unknown) => {
    ctx.logger.warn({ err, templateID: template.templateID }, "could not record the template's spawn");
  });
}

/** The node stopped the sandbox (its FAILED or KILLED event) while it was creating it. */
class StoppedWhileCreatingError extends Error {
  constructor(
    nodeID: string,
    sandboxID: string,
    reason: string,
    /** Deletes what the node may still hold of it; run once the record names another node. */
    readonly leftover?: () => Promise<void>,
  ) {
    super(`node '${nodeID}' stopped sandbox '${sandboxID}' while creating it (${reason})`);
    this.name = "StoppedWhileCreatingError";
  }
}

async function startOnNode(
  ctx: APIContext,
  node: NodeClient,
  sandboxID: string,
  input: CreateSandboxInput,
  template: Template,
  envdAccessToken: string | null,
  endAt: Date,
  mounts: SandboxVolumeMount[],
): Promise<SandboxRow> {
  // A stop event of this node for the sandbox, until it answers, is this create's to handle.
  ctx.creates.begin(sandboxID, node.id);
  const created = node.create(
    {
      sandboxId: sandboxID,
      templateId: template.templateID,
      teamId: input.team.team_id,
      vcpu: template.cpuCount,
      memoryMb: template.memoryMB,
      diskSizeMb: template.diskSizeMB,
      envVars: input.envVars,
      metadata: input.metadata,
      envdAccessToken: envdAccessToken ?? "",
      allowInternetAccess: input.allowInternetAccess ?? true,
      allowOut: input.network?.allowOut ?? [],
      denyOut: input.network?.denyOut ?? [],
      autoPause: input.autoPause,
      autoPauseMemory: input.autoPauseMemory,
      buildId: template.snapshot ? "" : template.buildID,
      snapshotId: template.snapshot ? template.buildID : "",
      defaultUser: template.defaultUser,
      defaultWorkdir: template.defaultWorkdir,
      volumeMounts: mounts.map((m) => ({ volumeId: m.volumeID, name: m.name, path: m.path })),
    },
    endAt,
  );
  const info = await created.catch((err: unknown) => {
    const stopped = ctx.creates.end(sandboxID);
    throw stopped === undefined ? err : new StoppedWhileCreatingError(node.id, sandboxID, stopped);
  });
  const stopped = ctx.creates.end(sandboxID);
  if (stopped !== undefined) {
    // Its delete's KILLED event must find the record on another node (or closed), not close it.
    throw new StoppedWhileCreatingError(node.id, sandboxID, stopped, () =>
      node.delete(sandboxID).then(
        () => undefined,
        () => undefined,
      ),
    );
  }
  const row = await updateSandbox(ctx.db, sandboxID, ["starting"], {
    state: "running",
    host_address: info.hostAddress,
    envd_version: info.envdVersion,
  });
  if (!row) {
    // A node event closed the record while the create was in flight (the sandbox failed right
    // away); make sure nothing stays behind on the node.
    await node.delete(sandboxID).catch(() => undefined);
    throw new Error(`sandbox '${sandboxID}' stopped while it was being created`);
  }
  ctx.catalog.update(sandboxID, row);
  return row;
}
