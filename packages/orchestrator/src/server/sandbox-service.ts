/**
 * The orchestrator's RPC service (orchestrator.SandboxService): a thin transport over the sandbox
 * manager. Domain errors become status codes here and nowhere else.
 */
import type { MessageInitShape } from "@bufbuild/protobuf";
import { timestampDate, timestampFromDate } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, type ServiceImpl } from "@connectrpc/connect";
import { Channel, ENVD_VERSION } from "@moat/shared";
import {
  type SandboxConfigSchema,
  SandboxEventType,
  type SandboxInfoSchema,
  type SandboxService,
  SandboxState,
} from "@moat/shared/gen/orchestrator";
import {
  InvalidSandboxConfigError,
  NodeBusyError,
  PauseFailedError,
  PublishedPauseMissingError,
  ResumeFailedError,
  SandboxExistsError,
  SandboxNotFoundError,
  SandboxStateError,
  SnapshotExistsError,
  SnapshotFailedError,
  SnapshotNotFoundError,
  TemplateNotFoundError,
} from "../sandbox/errors.js";
import type { SandboxEvent, SandboxManager } from "../sandbox/manager.js";
import type { SandboxRecord } from "../sandbox/record.js";
import type { Sandbox } from "../sandbox/sandbox.js";
import type { snapshotConfigOf } from "../snapshot/sandbox-snapshot.js";
import { VolumeNotFoundError } from "../storage/volumes.js";
import { LOG_LEVELS, type LogLevel } from "../telemetry/logs/entry.js";
import type { SandboxLogStore } from "../telemetry/logs/store.js";

const STATES: Record<Sandbox["state"], SandboxState> = {
  // Pool entries are never in the registry; were one listed, it is not ready for anyone yet.
  pooled: SandboxState.STARTING,
  starting: SandboxState.STARTING,
  running: SandboxState.RUNNING,
  pausing: SandboxState.PAUSING,
  paused: SandboxState.PAUSED,
  resuming: SandboxState.RESUMING,
  // Stopped in place for a moment while a snapshot is taken; it runs on after.
  snapshotting: SandboxState.RUNNING,
  stopping: SandboxState.STOPPING,
};
const EVENT_TYPES: Record<SandboxEvent["type"], SandboxEventType> = {
  created: SandboxEventType.CREATED,
  killed: SandboxEventType.KILLED,
  expired: SandboxEventType.EXPIRED,
  failed: SandboxEventType.FAILED,
  pausing: SandboxEventType.PAUSING,
  paused: SandboxEventType.PAUSED,
  resumed: SandboxEventType.RESUMED,
};

export function sandboxService(
  manager: SandboxManager,
  logs?: SandboxLogStore,
): ServiceImpl<typeof SandboxService> {
  return {
    async create(req) {
      const config = req.sandbox;
      if (!config) throw new ConnectError("sandbox config is required", Code.InvalidArgument);
      if (!req.endTime) throw new ConnectError("end_time is required", Code.InvalidArgument);
      const endTime = timestampDate(req.endTime);
      const sandbox = await mapErrors(() =>
        manager.create({
          sandboxID: config.sandboxId,
          templateID: config.templateId,
          buildID: config.buildId || undefined,
          teamID: config.teamId,
          vcpu: config.vcpu || 2,
          memoryMB: config.memoryMb || 512,
          diskSizeMB: config.diskSizeMb,
          envVars: config.envVars,
          metadata: config.metadata,
          envdAccessToken: config.envdAccessToken,
          allowInternetAccess: config.allowInternetAccess,
          allowOut: config.allowOut,
          denyOut: config.denyOut,
          defaultUser: config.defaultUser,
          defaultWorkdir: config.defaultWorkdir,
          autoPause: config.autoPause,
          autoPauseMemory: config.autoPauseMemory,
          snapshotID: config.snapshotId || undefined,
          volumeMounts: config.volumeMounts.map((m) => ({
            volumeID: m.volumeId,
            name: m.name,
            path: m.path,
          })),
          endTime,
        }),
      );
      return { sandbox: info(sandbox) };
    },
    async get(req) {
      return { sandbox: info(await mapErrors(async () => manager.get(req.sandboxId))) };
    },
    list() {
      return { sandboxes: manager.list().map(info) };
    },
    async delete(req) {
      await mapErrors(() => manager.kill(req.sandboxId, "killed", "request"));
      return {};
    },
    async pause(req) {
      const sandbox = await mapErrors(() => manager.pause(req.sandboxId, { memory: req.memory ?? true }));
      return { sandbox: info(sandbox) };
    },
    async resume(req) {
      if (!req.endTime) throw new ConnectError("end_time is required", Code.InvalidArgument);
      const endTime = timestampDate(req.endTime);
      const sandbox = await mapErrors(() =>
        manager.resume(req.sandboxId, endTime, {
          reboot: req.reboot,
          generation: req.artifactGeneration || undefined,
        }),
      );
      return { sandbox: info(sandbox) };
    },
    async updateNetwork(req) {
      await mapErrors(() =>
        manager.updateNetwork(req.sandboxId, {
          allowInternetAccess: req.allowInternetAccess,
          allowOut: req.allowOut,
          denyOut: req.denyOut,
        }),
      );
      return {};
    },
    async snapshot(req) {
      const snapshot = await mapErrors(() => manager.snapshot(req.sandboxId, req.snapshotId));
      return {
        snapshot: {
          snapshotId: snapshot.snapshotID,
          sourceSandboxId: snapshot.sourceSandboxID,
          config: configMessage({ ...snapshot.config, sandboxID: "" }),
          createdTime: timestampFromDate(new Date(snapshot.createdAt)),
          sizeBytes: BigInt(snapshot.sizeBytes),
        },
      };
    },
    async deleteSnapshot(req) {
      await mapErrors(async () => {
        if (!(await manager.deleteSnapshot(req.snapshotId))) throw new SnapshotNotFoundError(req.snapshotId);
      });
      return {};
    },
    async fork(req) {
      const targets = req.forks.map((f) => {
        if (!f.endTime) throw new ConnectError("each fork needs an end_time", Code.InvalidArgument);
        return {
          sandboxID: f.sandboxId,
          envdAccessToken: f.envdAccessToken,
          endTime: timestampDate(f.endTime),
        };
      });
      const outcomes = await mapErrors(() => manager.fork(req.sandboxId, targets));
      return {
        results: outcomes.map((o) =>
          o.sandbox
            ? { sandbox: info(o.sandbox) }
            : {
                errorMessage: o.error.message,
                errorCode: o.error instanceof NodeBusyError ? "resource_exhausted" : "internal",
              },
        ),
      };
    },
    async logs(req) {
      const direction = req.direction || "forward";
      if (direction !== "forward" && direction !== "backward") {
        throw new ConnectError(
          `direction must be forward or backward, got '${req.direction}'`,
          Code.InvalidArgument,
        );
      }
      const level = (req.level || "debug") as LogLevel;
      if (!LOG_LEVELS.includes(level)) {
        throw new ConnectError(
          `level must be one of ${LOG_LEVELS.join(", ")}, got '${req.level}'`,
          Code.InvalidArgument,
        );
      }
      if (!logs) return { entries: [] };
      const entries = await logs.query(req.sandboxId, {
        cursor: Number(req.cursor),
        limit: req.limit,
        direction,
        level,
        search: req.search,
      });
      return {
        entries: entries.map((e) => ({
          timestamp: timestampFromDate(new Date(e.t)),
          level: e.l,
          message: e.m,
          fields: e.f ?? {},
          source: e.s,
        })),
      };
    },
    async updateEndTime(req) {
      if (!req.endTime) throw new ConnectError("end_time is required", Code.InvalidArgument);
      const endTime = timestampDate(req.endTime);
      await mapErrors(async () => manager.updateEndTime(req.sandboxId, endTime));
      return {};
    },
    async *watchEvents(_req, ctx) {
      // Unbounded (events are few); an aborted call ends the stream at once, dropping what waits.
      const queue = new Channel<SandboxEvent>({ signal: ctx.signal });
      const unsubscribe = manager.subscribe((event) => queue.push(event));
      try {
        for await (const event of queue) {
          yield {
            sandboxId: event.sandboxID,
            type: EVENT_TYPES[event.type],
            time: timestampFromDate(event.time),
            reason: event.reason,
          };
        }
      } finally {
        unsubscribe();
      }
    },
  };
}

function info(sandbox: Sandbox): MessageInitShape<typeof SandboxInfoSchema> {
  const r = sandbox.record;
  return {
    config: configMessage(r),
    state: STATES[sandbox.state],
    startTime: timestampFromDate(new Date(r.startTime)),
    endTime: timestampFromDate(sandbox.endTime),
    hostAddress: sandbox.hostAddress,
    envdVersion: ENVD_VERSION,
    lifecycleId: r.lifecycleID,
    startKind: r.startKind ?? "cold",
    artifactGeneration: sandbox.state === "paused" ? (r.published ?? 0) : 0,
  };
}

/** A sandbox's settings as the RPCs carry them (the access token never leaves the node). */
function configMessage(
  r: Pick<SandboxRecord, "sandboxID"> & ReturnType<typeof snapshotConfigOf> & { snapshotID?: string },
): MessageInitShape<typeof SandboxConfigSchema> {
  return {
    sandboxId: r.sandboxID,
    templateId: r.templateID,
    buildId: r.buildID ?? "",
    teamId: r.teamID,
    vcpu: r.vcpu,
    memoryMb: r.memoryMB,
    diskSizeMb: r.diskSizeMB,
    envVars: r.envVars,
    metadata: r.metadata,
    allowInternetAccess: r.allowInternetAccess,
    allowOut: r.allowOut ?? [],
    denyOut: r.denyOut ?? [],
    defaultUser: r.defaultUser,
    defaultWorkdir: r.defaultWorkdir,
    autoPause: r.autoPause ?? false,
    autoPauseMemory: r.autoPauseMemory ?? true,
    snapshotId: r.snapshotID ?? "",
    volumeMounts: (r.volumeMounts ?? []).map((m) => ({ volumeId: m.volumeID, name: m.name, path: m.path })),
  };
}

async function mapErrors<T>(fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (err) {
    if (err instanceof ConnectError) throw err;
    if (err instanceof SandboxNotFoundError) throw new ConnectError(err.message, Code.NotFound);
    if (err instanceof TemplateNotFoundError) throw new ConnectError(err.message, Code.NotFound);
    if (err instanceof SnapshotNotFoundError) throw new ConnectError(err.message, Code.NotFound);
    if (err instanceof SnapshotExistsError) throw new ConnectError(err.message, Code.AlreadyExists);
    // Nothing of it is left and the sandbox runs on: the caller may try again.
    if (err instanceof SnapshotFailedError) throw new ConnectError(err.message, Code.Aborted);
    if (err instanceof SandboxExistsError) throw new ConnectError(err.message, Code.AlreadyExists);
    if (err instanceof NodeBusyError) throw new ConnectError(err.message, Code.ResourceExhausted);
    if (err instanceof InvalidSandboxConfigError) throw new ConnectError(err.message, Code.InvalidArgument);
    if (err instanceof SandboxStateError) throw new ConnectError(err.message, Code.FailedPrecondition);
    if (err instanceof PublishedPauseMissingError)
      throw new ConnectError(err.message, Code.FailedPrecondition);
    // A volume deleted behind the API's back (its own checks keep creates off deleted ones).
    if (err instanceof VolumeNotFoundError) throw new ConnectError(err.message, Code.InvalidArgument);
    // The sandbox is whole (still running, or still paused): the caller may try again.
    if (err instanceof PauseFailedError || err instanceof ResumeFailedError) {
      throw new ConnectError(err.message, Code.Unavailable);
    }
    throw new ConnectError("internal error", Code.Internal, undefined, undefined, err);
  }
}
