/**
 * orchestrator.VolumeService: the node's volumes (storage/volumes.ts) and their files
 * (storage/volume-files.ts), for the API's volume routes. Domain errors become status codes here.
 */
import type { MessageInitShape } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, type ServiceImpl } from "@connectrpc/connect";
import type {
  VolumeEntrySchema,
  VolumeOwnership,
  VolumeRef as VolumeRefMessage,
  VolumeService,
  WriteVolumeFileRequest,
} from "@moat/shared/gen/orchestrator";
import type { SandboxManager } from "../sandbox/manager.js";
import { type Ownership, readChunks, type VolumeEntry, VolumeFileError } from "../storage/volume-files.js";
import {
  InvalidVolumeError,
  type VolumeInUseError,
  VolumeMoveError,
  VolumeNotFoundError,
  type VolumeRef,
  type VolumeStore,
  type VolumeUsage,
} from "../storage/volumes.js";

export function volumeService(
  volumes: VolumeStore,
  manager: SandboxManager,
): ServiceImpl<typeof VolumeService> {
  /** Sandboxes of this node (running, paused, starting) that mount the volume. */
  const usersOf = (ref: VolumeRef) =>
    manager
      .list()
      .filter(
        (s) =>
          s.record.teamID === ref.teamID && s.record.volumeMounts?.some((m) => m.volumeID === ref.volumeID),
      )
      .map((s) => s.id);
  return {
    async create(req) {
      return usageOf(
        await mapErrors(() => volumes.create(refOf(req.volume), req.sizeMb, req.fromGeneration)),
      );
    },
    async release(req) {
      const ref = refOf(req.volume);
      await mapErrors(() => volumes.release(ref, () => usersOf(ref), req.generation));
      return {};
    },
    async delete(req) {
      const ref = refOf(req);
      await mapErrors(() => volumes.remove(ref, () => usersOf(ref)));
      return {};
    },
    async usage(req) {
      return usageOf(await mapErrors(() => volumes.usage(refOf(req))));
    },
    async stat(req) {
      return wire(await mapErrors(() => volumes.withFiles(refOf(req.volume), (f) => f.stat(req.path))));
    },
    async listDir(req) {
      const entries = await mapErrors(() =>
        volumes.withFiles(refOf(req.volume), (f) => f.list(req.path, req.depth || 1)),
      );
      return { entries: entries.map(wire) };
    },
    async makeDir(req) {
      return wire(
        await mapErrors(() =>
          volumes.withFiles(refOf(req.volume), (f) =>
            f.makeDir(req.path, ownershipOf(req.ownership), req.parents),
          ),
        ),
      );
    },
    async remove(req) {
      await mapErrors(() => volumes.withFiles(refOf(req.volume), (f) => f.remove(req.path)));
      return {};
    },
    async updateMetadata(req) {
      return wire(
        await mapErrors(() =>
          volumes.withFiles(refOf(req.volume), (f) => f.updateMetadata(req.path, ownershipOf(req.ownership))),
        ),
      );
    },
    async *readFile(req) {
      // The file is held by descriptor from here on; the volume's root need not be.
      const { entry, handle } = await mapErrors(() =>
        volumes.withFiles(refOf(req.volume), (f) => f.openRead(req.path)),
      );
      try {
        yield { part: { case: "entry", value: wire(entry) } };
        for await (const chunk of readChunks(handle)) yield { part: { case: "chunk", value: chunk } };
      } catch (err) {
        throw mapError(err);
      } finally {
        await handle.close();
      }
    },
    async writeFile(requests) {
      const iterator = requests[Symbol.asyncIterator]();
      const first = await iterator.next();
      const header = first.done ? undefined : first.value.part;
      if (header?.case !== "header") {
        throw new ConnectError("the first message of WriteFile must be its header", Code.InvalidArgument);
      }
      const { volume, path, ownership } = header.value;
      const chunks = async function* () {
        for (;;) {
          const next = await iterator.next();
          if (next.done) return;
          const part = (next.value as WriteVolumeFileRequest).part;
          if (part.case !== "chunk") {
            throw new ConnectError("WriteFile takes one header, then chunks", Code.InvalidArgument);
          }
          yield part.value;
        }
      };
      return wire(
        await mapErrors(() =>
          volumes.withFiles(refOf(volume), (f) => f.write(path, ownershipOf(ownership), chunks())),
        ),
      );
    },
  };
}

function refOf(ref: VolumeRefMessage | undefined): VolumeRef {
  if (!ref) throw new ConnectError("the volume (team_id, volume_id) is required", Code.InvalidArgument);
  return { teamID: ref.teamId, volumeID: ref.volumeId };
}

function usageOf(usage: VolumeUsage) {
  return { sizeBytes: BigInt(usage.sizeBytes), usedBytes: BigInt(usage.usedBytes) };
}

function ownershipOf(o: VolumeOwnership | undefined): Ownership {
  return { uid: o?.uid, gid: o?.gid, mode: o?.mode };
}

function wire(entry: VolumeEntry): MessageInitShape<typeof VolumeEntrySchema> {
  return {
    name: entry.name,
    type: entry.type,
    path: entry.path,
    size: BigInt(entry.size),
    mode: entry.mode,
    uid: entry.uid,
    gid: entry.gid,
    atime: timestampFromDate(entry.atime),
    mtime: timestampFromDate(entry.mtime),
    ctime: timestampFromDate(entry.ctime),
    target: entry.target ?? "",
  };
}

async function mapErrors<T>(fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (err) {
    throw mapError(err);
  }
}

function mapError(err: unknown): ConnectError {
  if (err instanceof ConnectError) return err;
  if (err instanceof VolumeFileError) {
    const codes: Record<VolumeFileError["kind"], Code> = {
      invalid: Code.InvalidArgument,
      "not-found": Code.NotFound,
      exists: Code.AlreadyExists,
      "not-empty": Code.FailedPrecondition,
      full: Code.ResourceExhausted,
    };
    return new ConnectError(err.message, codes[err.kind]);
  }
  if (err instanceof VolumeNotFoundError) return new ConnectError(err.message, Code.NotFound);
  if (err instanceof InvalidVolumeError) return new ConnectError(err.message, Code.InvalidArgument);
  if (err instanceof VolumeMoveError) return new ConnectError(err.message, Code.FailedPrecondition);
  if ((err as VolumeInUseError).name === "VolumeInUseError") {
    return new ConnectError((err as Error).message, Code.FailedPrecondition);
  }
  return new ConnectError("internal error", Code.Internal, undefined, undefined, err);
}
