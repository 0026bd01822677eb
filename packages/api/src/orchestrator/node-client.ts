/**
 * The API's side of one node: a client of its orchestrator's SandboxService and TemplateService.
 * RPC failures become the typed node errors below, so the sandbox and template code never looks at
 * Connect codes.
 */
import type { MessageInitShape } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { type Client, Code, ConnectError, createClient, type Transport } from "@connectrpc/connect";
import { createGrpcTransport, Http2SessionManager } from "@connectrpc/connect-node";
import {
  type BuildTemplateEvent,
  type BuildTemplateRequestSchema,
  type ForkResult,
  type SandboxConfigSchema,
  type SandboxEvent,
  type SandboxInfo,
  type SandboxLogEntry,
  SandboxService,
  type SnapshotInfo,
  TemplateService,
  VolumeService,
} from "@moat/shared/gen/orchestrator";
import type { OrchestratorNodeOptions } from "../config.js";
import { type NodeInfo, staticNodeInfo } from "../nodes/info.js";

/** The node does not have the sandbox (it was killed, expired, or never placed there). */
export class NodeSandboxNotFoundError extends Error {
  constructor(
    readonly nodeID: string,
    message: string,
  ) {
    super(message);
    this.name = "NodeSandboxNotFoundError";
  }
}

/** The node is full or starting too many sandboxes; another node (or a retry) may take it. */
export class NodeBusyError extends Error {
  constructor(
    readonly nodeID: string,
    message: string,
  ) {
    super(message);
    this.name = "NodeBusyError";
  }
}

/** The node cannot be reached (down, restarting, network). */
export class NodeUnavailableError extends Error {
  constructor(
    readonly nodeID: string,
    message: string,
  ) {
    super(`node '${nodeID}' is unavailable: ${message}`);
    this.name = "NodeUnavailableError";
  }
}

/** The node refused the request as invalid (bad config, unknown template, duplicate id). */
export class NodeRejectedError extends Error {
  constructor(
    readonly nodeID: string,
    readonly code: "invalid" | "not-found" | "exists",
    message: string,
  ) {
    super(message);
    this.name = "NodeRejectedError";
  }
}

/**
 * The sandbox is not in a state the call needs on the node: between states (starting, stopping,
 * pausing, resuming), or already paused (Pause) or not paused (Resume).
 */
export class NodeTransitionError extends Error {
  constructor(
    readonly nodeID: string,
    message: string,
  ) {
    super(message);
    this.name = "NodeTransitionError";
  }
}

/** A snapshot (or a fork's) failed on the node; nothing of it is left and the sandbox runs on. */
export class NodeSnapshotFailedError extends Error {
  constructor(
    readonly nodeID: string,
    message: string,
  ) {
    super(message);
    this.name = "NodeSnapshotFailedError";
  }
}

/**
 * Creates boot a sandbox and wait for envd, pauses checkpoint its memory, resumes restore it and
 * wait for envd, kills wait for a pause or resume in flight and tear the container down (over 15 s
 * on a busy node): allow them far longer than the other calls.
 */
const TRANSITION_TIMEOUT_MS = 90_000;
const CALL_TIMEOUT_MS = 15_000;

export class NodeClient {
  readonly id: string;
  /** Status, proxy, labels, capacity and load (nodes/registry.ts keeps it up to date). */
  info: NodeInfo;
  private readonly client: Client<typeof SandboxService>;
  private readonly templates: Client<typeof TemplateService>;
  /** The node's volumes and their files (volume/node-volumes.ts wraps it with its own errors). */
  readonly volumes: Client<typeof VolumeService>;
  private readonly sessions: Http2SessionManager | undefined;
  private readonly callMs: number;
  private readonly transitionMs: number;

  /** Base URL of the node's proxy, when it has one (a registered node reports it). */
  proxyURL: string | undefined;

  /** A node in this process: its capacity and load, asked for when shown (config.ts). */
  readonly sampleLoad: OrchestratorNodeOptions["sampleLoad"];

  constructor(options: OrchestratorNodeOptions, info: NodeInfo = staticNodeInfo()) {
    this.id = options.id;
    this.proxyURL = options.proxyURL;
    this.sampleLoad = options.sampleLoad;
    this.info = { ...info, proxyURL: info.proxyURL ?? options.proxyURL, rpcURL: info.rpcURL ?? options.url };
    this.callMs = options.deadlines?.call ?? CALL_TIMEOUT_MS;
    this.transitionMs = options.deadlines?.transition ?? TRANSITION_TIMEOUT_MS;
    let transport: Transport;
    if (options.transport) {
      transport = options.transport;
    } else {
      const url = options.url!;
      const authorization = `Bearer ${options.token ?? ""}`;
      this.sessions = new Http2SessionManager(url, { pingIntervalMs: 10_000, pingTimeoutMs: 5_000 });
      transport = createGrpcTransport({
        baseUrl: url,
        sessionManager: this.sessions,
        interceptors: [
          (next) => (req) => {
            req.header.set("authorization", authorization);
            return next(req);
          },
        ],
      });
    }
    this.client = createClient(SandboxService, transport);
    this.templates = createClient(TemplateService, transport);
    this.volumes = createClient(VolumeService, transport);
  }

  async create(config: MessageInitShape<typeof SandboxConfigSchema>, endTime: Date): Promise<SandboxInfo> {
    const res = await this.call("create", () =>
      this.client.create(
        { sandbox: config, endTime: timestampFromDate(endTime) },
        { timeoutMs: this.transitionMs },
      ),
    );
    if (!res.sandbox) throw new Error(`node '${this.id}' answered Create without a sandbox`);
    return res.sandbox;
  }

  async get(sandboxID: string): Promise<SandboxInfo> {
    const res = await this.call("get", () =>
      this.client.get({ sandboxId: sandboxID }, { timeoutMs: this.callMs }),
    );
    if (!res.sandbox) throw new NodeSandboxNotFoundError(this.id, `sandbox '${sandboxID}' not found`);
    return res.sandbox;
  }

  async list(): Promise<SandboxInfo[]> {
    const res = await this.call("list", () => this.client.list({}, { timeoutMs: this.callMs }));
    return res.sandboxes;
  }

  async delete(sandboxID: string): Promise<void> {
    await this.call("delete", () =>
      this.client.delete({ sandboxId: sandboxID }, { timeoutMs: this.transitionMs }),
    );
  }

  async updateEndTime(sandboxID: string, endTime: Date): Promise<void> {
    await this.call("updateEndTime", () =>
      this.client.updateEndTime(
        { sandboxId: sandboxID, endTime: timestampFromDate(endTime) },
        { timeoutMs: this.callMs },
      ),
    );
  }

  /** Replaces a sandbox's egress rules (applied at once while it runs, on its resume while paused). */
  async updateNetwork(
    sandboxID: string,
    rules: { allowInternetAccess: boolean; allowOut: string[]; denyOut: string[] },
  ): Promise<void> {
    await this.call("updateNetwork", () =>
      this.client.updateNetwork({ sandboxId: sandboxID, ...rules }, { timeoutMs: this.callMs }),
    );
  }

  /** Pauses a running sandbox; `memory: false` keeps only its files (its resume boots afresh). */
  async pause(sandboxID: string, memory: boolean | undefined): Promise<SandboxInfo> {
    const res = await this.call("pause", () =>
      this.client.pause({ sandboxId: sandboxID, memory }, { timeoutMs: this.transitionMs }),
    );
    if (!res.sandbox) throw new Error(`node '${this.id}' answered Pause without a sandbox`);
    return res.sandbox;
  }

  /**
   * Resumes a paused sandbox until `endTime`; `reboot` boots it afresh from its files instead of
   * restoring its memory. `artifactGeneration`: the published pause to fetch from the artifact
   * store when the node does not hold it (a resume away from its node). The answer carries its new
   * host address.
   */
  async resume(
    sandboxID: string,
    endTime: Date,
    reboot: boolean,
    artifactGeneration = 0,
  ): Promise<SandboxInfo> {
    const res = await this.call("resume", () =>
      this.client.resume(
        { sandboxId: sandboxID, endTime: timestampFromDate(endTime), reboot, artifactGeneration },
        { timeoutMs: this.transitionMs },
      ),
    );
    if (!res.sandbox) throw new Error(`node '${this.id}' answered Resume without a sandbox`);
    return res.sandbox;
  }

  /** Saves a running sandbox as snapshot `snapshotID` (memory, processes, files); it runs on. */
  async snapshot(sandboxID: string, snapshotID: string): Promise<SnapshotInfo> {
    const res = await this.call("snapshot", () =>
      this.client.snapshot(
        { sandboxId: sandboxID, snapshotId: snapshotID },
        { timeoutMs: this.transitionMs },
      ),
    );
    if (!res.snapshot) throw new Error(`node '${this.id}' answered Snapshot without a snapshot`);
    return res.snapshot;
  }

  /** A page of a sandbox's log kept on the node (start command output, envd); see the proto. */
  async logs(query: {
    sandboxID: string;
    cursor?: number;
    limit: number;
    direction: "forward" | "backward";
    level?: string;
    search?: string;
  }): Promise<SandboxLogEntry[]> {
    const res = await this.call("logs", () =>
      this.client.logs(
        {
          sandboxId: query.sandboxID,
          cursor: BigInt(query.cursor ?? 0),
          limit: query.limit,
          direction: query.direction,
          level: query.level ?? "",
          search: query.search ?? "",
        },
        { timeoutMs: this.callMs },
      ),
    );
    return res.entries;
  }

  /** Removes a snapshot; one the node does not have is not an error. */
  async deleteSnapshot(snapshotID: string): Promise<void> {
    try {
      await this.call("deleteSnapshot", () =>
        this.client.deleteSnapshot({ snapshotId: snapshotID }, { timeoutMs: this.callMs }),
      );
    } catch (err) {
      if (err instanceof NodeSandboxNotFoundError) return;
      throw err;
    }
  }

  /**
   * Snapshots a running sandbox once and starts a sandbox per fork from it; one result per fork,
   * in order. Forks restore a few at a time: the deadline grows with their number.
   */
  async fork(
    sandboxID: string,
    forks: Array<{ sandboxID: string; envdAccessToken: string; endTime: Date }>,
  ): Promise<ForkResult[]> {
    const res = await this.call("fork", () =>
      this.client.fork(
        {
          sandboxId: sandboxID,
          forks: forks.map((f) => ({
            sandboxId: f.sandboxID,
            envdAccessToken: f.envdAccessToken,
            endTime: timestampFromDate(f.endTime),
          })),
        },
        { timeoutMs: this.transitionMs * Math.max(1, Math.ceil(forks.length / 2)) },
      ),
    );
    if (res.results.length !== forks.length) {
      throw new Error(
        `node '${this.id}' answered Fork with ${res.results.length} results for ${forks.length} forks`,
      );
    }
    return res.results;
  }

  /** The node's lifecycle events from now on, until `signal` aborts or the stream breaks. */
  async *events(signal: AbortSignal): AsyncGenerator<SandboxEvent> {
    try {
      for await (const event of this.client.watchEvents({}, { signal })) yield event;
    } catch (err) {
      if (signal.aborted) return;
      throw this.mapError(err);
    }
  }

  /**
   * Runs a template build: its log entries as they happen, then its result. Aborting `signal`
   * cancels the build on the node. No deadline: a build takes as long as its steps.
   */
  async *build(
    request: MessageInitShape<typeof BuildTemplateRequestSchema>,
    signal: AbortSignal,
  ): AsyncGenerator<BuildTemplateEvent> {
    try {
      for await (const event of this.templates.build(request, { signal })) yield event;
    } catch (err) {
      throw this.mapError(err, "build");
    }
  }

  /** Removes a build's snapshot and settings from the node (the layers other builds use stay). */
  async deleteBuild(buildID: string): Promise<void> {
    await this.call("deleteBuild", () =>
      this.templates.deleteBuild({ buildId: buildID }, { timeoutMs: this.callMs }),
    );
  }

  /** Closes the node's connection; calls after this fail. */
  close(): void {
    this.sessions?.abort();
  }

  private async call<T>(method: string, fn: () => Promise<T>): Promise<T> {
    try {
      return await fn();
    } catch (err) {
      throw this.mapError(err, method);
    }
  }

  private mapError(err: unknown, method = "watchEvents"): Error {
    const connectErr = ConnectError.from(err);
    const message = connectErr.rawMessage;
    switch (connectErr.code) {
      case Code.NotFound:
        return method === "create" || method === "build"
          ? new NodeRejectedError(this.id, "not-found", message)
          : new NodeSandboxNotFoundError(this.id, message);
      case Code.InvalidArgument:
        return new NodeRejectedError(this.id, "invalid", message);
      case Code.AlreadyExists:
        return new NodeRejectedError(this.id, "exists", message);
      case Code.ResourceExhausted:
        return new NodeBusyError(this.id, message);
      case Code.FailedPrecondition:
        return new NodeTransitionError(this.id, message);
      case Code.Aborted:
        return new NodeSnapshotFailedError(this.id, message);
      case Code.Unavailable:
      case Code.DeadlineExceeded:
        return new NodeUnavailableError(this.id, message);
      // A wrong token is the operator's to fix; meanwhile the node is as good as down.
      case Code.Unauthenticated:
        return new NodeUnavailableError(
          this.id,
          `it refused the API's node token (${message}); give the API the token from the file node-token in the orchestrator's data directory`,
        );
      default:
        return new Error(`node '${this.id}' ${method} failed: ${connectErr.message}`, { cause: err });
    }
  }
}
