/**
 * The API's side of a node's VolumeService: each call on the node that holds the volume, its
 * failures turned into the API's errors (a path that is not there is a 404, a bad path a 400, a
 * full volume a 507, a volume in use a 409, an unreachable node a 503).
 */
import type { MessageInitShape } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import type {
  VolumeEntry,
  VolumeOwnershipSchema,
  VolumeUsage,
  WriteVolumeFileRequestSchema,
} from "@moat/shared/gen/orchestrator";
import type { APIContext } from "../context.js";
import type { VolumeRow } from "../db/schema.js";
import {
  ConflictError,
  InvalidRequestError,
  NodeUnreachableError,
  VolumeFullError,
  VolumeNotFoundError,
} from "../errors.js";
import type { NodeClient } from "../orchestrator/node-client.js";

/** Bytes per message of a file streamed to or from a node: fewer, larger messages stream faster. */
const STREAM_CHUNK_BYTES = 1024 * 1024;

/** mkfs and a mount, or a removal of everything in a volume: longer than a plain call. */
const LIFECYCLE_TIMEOUT_MS = 120_000;
/** A stat, a listing, a directory made or changed. */
const CALL_TIMEOUT_MS = 60_000;

export type Ownership = MessageInitShape<typeof VolumeOwnershipSchema>;

export class NodeVolumes {
  private readonly ref: { teamId: string; volumeId: string };

  constructor(
    private readonly node: NodeClient,
    volume: Pick<VolumeRow, "team_id" | "volume_id">,
  ) {
    this.ref = { teamId: volume.team_id, volumeId: volume.volume_id };
  }

  /** The node that holds `volume`; 503 when the API does not know it (a node taken out). */
  static of(ctx: Pick<APIContext, "nodes">, volume: VolumeRow): NodeVolumes {
    const node = ctx.nodes.get(volume.node_id);
    if (!node) {
      throw new NodeUnreachableError(
        `node '${volume.node_id}', which holds volume '${volume.name}', is not configured in this API`,
      );
    }
    return new NodeVolumes(node, volume);
  }

  /** Makes the volume; `fromGeneration`: takes it from the artifact store instead (a move). */
  create(sizeMB: number, fromGeneration = 0): Promise<VolumeUsage> {
    return this.call(() =>
      this.node.volumes.create(
        { volume: this.ref, sizeMb: sizeMB, fromGeneration },
        { timeoutMs: LIFECYCLE_TIMEOUT_MS },
      ),
    );
  }

  /** Publishes the volume to the artifact store as `generation` and removes it from the node. */
  async release(generation: number): Promise<void> {
    await this.call(() =>
      this.node.volumes.release({ volume: this.ref, generation }, { timeoutMs: LIFECYCLE_TIMEOUT_MS }),
    );
  }

  async delete(): Promise<void> {
    await this.call(() => this.node.volumes.delete(this.ref, { timeoutMs: LIFECYCLE_TIMEOUT_MS }));
  }

  usage(): Promise<VolumeUsage> {
    return this.call(() => this.node.volumes.usage(this.ref, { timeoutMs: CALL_TIMEOUT_MS }));
  }

  stat(path: string): Promise<VolumeEntry> {
    return this.call(() =>
      this.node.volumes.stat({ volume: this.ref, path }, { timeoutMs: CALL_TIMEOUT_MS }),
    );
  }

  async list(path: string, depth: number): Promise<VolumeEntry[]> {
    const res = await this.call(() =>
      this.node.volumes.listDir({ volume: this.ref, path, depth }, { timeoutMs: CALL_TIMEOUT_MS }),
    );
    return res.entries;
  }

  makeDir(path: string, ownership: Ownership, parents: boolean): Promise<VolumeEntry> {
    return this.call(() =>
      this.node.volumes.makeDir(
        { volume: this.ref, path, ownership, parents },
        { timeoutMs: CALL_TIMEOUT_MS },
      ),
    );
  }

  async remove(path: string): Promise<void> {
    await this.call(() =>
      this.node.volumes.remove({ volume: this.ref, path }, { timeoutMs: LIFECYCLE_TIMEOUT_MS }),
    );
  }

  updateMetadata(path: string, ownership: Ownership): Promise<VolumeEntry> {
    return this.call(() =>
      this.node.volumes.updateMetadata({ volume: this.ref, path, ownership }, { timeoutMs: CALL_TIMEOUT_MS }),
    );
  }

  /**
   * Opens the file on the node: its entry once the node found it (errors surface here, before any
   * byte is answered), then its bytes as they come. `signal` ends the read on the node.
   */
  async read(
    path: string,
    signal: AbortSignal,
  ): Promise<{ entry: VolumeEntry; bytes: AsyncIterable<Uint8Array> }> {
    const stream = this.node.volumes.readFile({ volume: this.ref, path }, { signal });
    const iterator = stream[Symbol.asyncIterator]();
    const first = await this.call(() => iterator.next());
    if (first.done || first.value.part.case !== "entry") {
      throw new Error(`node answered ReadFile of '${path}' without the file's entry`);
    }
    const entry = first.value.part.value;
    const call = <T>(fn: () => Promise<T>) => this.call(fn);
    const bytes = (async function* () {
      for (;;) {
        const next = await call(() => iterator.next());
        if (next.done) return;
        if (next.value.part.case === "chunk") yield next.value.part.value;
      }
    })();
    return { entry, bytes };
  }

  /** Streams `bytes` into the file on the node (a new file renamed over the old one when done). */
  write(
    path: string,
    ownership: Ownership,
    bytes: AsyncIterable<Uint8Array>,
    signal: AbortSignal,
  ): Promise<VolumeEntry> {
    const ref = this.ref;
    const requests = (async function* (): AsyncGenerator<
      MessageInitShape<typeof WriteVolumeFileRequestSchema>
    > {
      yield { part: { case: "header", value: { volume: ref, path, ownership } } };
      for await (const chunk of coalesce(bytes)) yield { part: { case: "chunk", value: chunk } };
    })();
    return this.call(() => this.node.volumes.writeFile(requests, { signal }));
  }

  private async call<T>(fn: () => Promise<T>): Promise<T> {
    try {
      return await fn();
    } catch (err) {
      throw this.mapError(err);
    }
  }

  private mapError(err: unknown): Error {
    if (!(err instanceof Error) || err instanceof InvalidRequestError) return err as Error;
    const connectErr = ConnectError.from(err);
    const message = connectErr.rawMessage;
    switch (connectErr.code) {
      case Code.NotFound:
        return new VolumeNotFoundError(message);
      case Code.InvalidArgument:
        return new InvalidRequestError(message);
      case Code.AlreadyExists:
      case Code.FailedPrecondition:
        return new ConflictError(message);
      case Code.ResourceExhausted:
        return new VolumeFullError(message);
      case Code.Unavailable:
      case Code.DeadlineExceeded:
      case Code.Unauthenticated:
        return new NodeUnreachableError(
          `the volume's node '${this.node.id}' is unavailable (${message}); retry`,
        );
      default:
        return new Error(`node '${this.node.id}' volume call failed: ${connectErr.message}`, { cause: err });
    }
  }
}

/** The body's pieces (64 KiB from an HTTP request) gathered into messages of up to 1 MiB. */
async function* coalesce(bytes: AsyncIterable<Uint8Array>): AsyncGenerator<Uint8Array> {
  let pending: Uint8Array[] = [];
  let size = 0;
  for await (const chunk of bytes) {
    pending.push(chunk);
    size += chunk.byteLength;
    if (size >= STREAM_CHUNK_BYTES) {
      yield Buffer.concat(pending, size);
      pending = [];
      size = 0;
    }
  }
  if (size > 0) yield Buffer.concat(pending, size);
}
