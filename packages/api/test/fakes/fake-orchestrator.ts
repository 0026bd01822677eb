/**
 * An orchestrator in memory: the SandboxService methods over a Map, served through Connect's
 * in-memory router transport, so the API under test talks to it with its real client (codes,
 * streams and all). End times are enforced with timers, as the real node does: announced as
 * EXPIRED events, or, for sandboxes created with auto_pause, as pauses (PAUSING, then PAUSED). Pause and
 * Resume follow the contract: failed_precondition unless running (Pause) or paused (Resume), a new
 * host address on every resume, paused sandboxes kept (List, Get, Delete) with no address.
 * Tests steer it with `failNext`, `holdNext`, `stopOutOfBand`, `pauseOutOfBand` (or
 * `beginPauseOutOfBand`, held between PAUSING and its outcome),
 * `resumeOutOfBand` and `calls`. Its TemplateService is `templates` (fake-template-service.ts);
 * creates start from the base template or from a build it finished. Given a shared
 * `FakeArtifacts` (several fakes may share one), it publishes every pause there as a real node with
 * an artifact store does, and a resume naming a published pause it does not hold fetches it; `down`
 * makes every call fail as unavailable (a node that is gone).
 */
import type { MessageInitShape } from "@bufbuild/protobuf";
import { timestampDate, timestampFromDate } from "@bufbuild/protobuf/wkt";
import {
  Code,
  ConnectError,
  createRouterTransport,
  type ServiceImpl,
  type Transport,
} from "@connectrpc/connect";
import {
  type SandboxConfig,
  type SandboxEventSchema,
  SandboxEventType,
  type SandboxInfoSchema,
  type SandboxLogEntrySchema,
  SandboxService,
  SandboxState,
  TemplateService,
  VolumeService,
} from "@moat/shared/gen/orchestrator";
import { FakeTemplateService } from "./fake-template-service.js";
import { FakeVolumeService } from "./fake-volume-service.js";

type EventInit = MessageInitShape<typeof SandboxEventSchema>;

/** Published pauses, by `<sandbox id>/<generation>`: what the shared artifact store holds. */
export type FakeArtifacts = Map<string, { config: SandboxConfig; memory: boolean }>;
/** Not an event type of the protocol: tells the fake's open streams that the node went down. */
const DOWN_EVENT = -1 as SandboxEventType;

type FakeState = "running" | "pausing" | "paused" | "resuming";

interface FakeSandbox {
  config: SandboxConfig;
  state: FakeState;
  startTime: Date;
  endTime: Date;
  /** Empty while paused. */
  hostAddress: string;
  startKind: "cold" | "resume";
  /** How it was last paused: with its memory, or only its files. */
  pausedWithMemory: boolean | undefined;
  timer: NodeJS.Timeout;
  /** Its pauses so far, and the one published (0: none). */
  generation?: number;
  published?: number;
}

type Method =
  | "create"
  | "delete"
  | "updateEndTime"
  | "updateNetwork"
  | "list"
  | "get"
  | "pause"
  | "resume"
  | "snapshot"
  | "deleteSnapshot"
  | "fork"
  | "logs"
  | "metrics";

/** A call stopped half-way (after its checks and state change, before its effect) until released. */
export interface Hold {
  /** Resolves with the sandbox id once the call reached the hold. */
  reached: Promise<string>;
  release(): void;
}

export class FakeOrchestrator {
  readonly sandboxes = new Map<string, FakeSandbox>();
  readonly templates = new FakeTemplateService();
  readonly volumes = new FakeVolumeService();
  /** Every call by method name, in order (the request's sandbox id, when it has one). */
  readonly calls: Array<{ method: string; sandboxID?: string }> = [];
  /** Every Pause and Resume request as received. */
  readonly transitions: Array<
    | { method: "pause"; sandboxID: string; memory?: boolean }
    | { method: "resume"; sandboxID: string; reboot: boolean }
  > = [];
  envdVersion = "0.6.13";
  /** Snapshots the node holds: their team and the sandbox each was taken from, by snapshot id. */
  readonly snapshots = new Map<string, { teamID: string; sourceSandboxID: string; config: SandboxConfig }>();
  /** What Logs answers, by sandbox id (as the node's store would: filters are the test's to apply). */
  readonly nodeLogs = new Map<string, MessageInitShape<typeof SandboxLogEntrySchema>[]>();
  /** Forks of the next Fork that fail, by position (0-based), with this error code and message. */
  readonly failForks = new Map<number, { code: string; message: string }>();
  /** What Metrics answers per sandbox (the node's samples: unix seconds and CPU %), and for which team. */
  readonly metricSamples = new Map<
    string,
    { teamID: string; samples: Array<{ time: number; cpuUsedPct: number }> }
  >();
  /** The last Metrics request (its step and range, as the API computed them). */
  lastMetricsRequest: { start?: number; end?: number; stepSeconds: number; latest: boolean } | undefined;
  private readonly listeners = new Set<(event: EventInit) => void>();
  private readonly failures: Array<{ method: Method; error: ConnectError }> = [];
  private readonly holds: Array<{ method: Method; reach(sandboxID: string): void; released: Promise<void> }> =
    [];
  /** Resumes hand out 127.0.0.2, .3, …: loopback, where nothing answers envd's port. */
  private nextHost = 2;
  /** Bumped to end every open WatchEvents stream. */
  private streamEpoch = 0;

  constructor(readonly artifacts?: FakeArtifacts) {}

  /**
   * The node is down (unreachable): every call fails with unavailable and the event streams end,
   * until `setDown(false)`. Its sandboxes stay as they were (a node whose network broke).
   */
  get down(): boolean {
    return this.isDown;
  }
  setDown(down: boolean): void {
    this.isDown = down;
    if (down) for (const listener of [...this.listeners]) listener({ sandboxId: "", type: DOWN_EVENT });
  }
  private isDown = false;

  /** The next call of `method` fails with `code`. */
  failNext(method: Method, code: Code, message = "injected"): void {
    this.failures.push({ method, error: new ConnectError(message, code) });
  }

  /** How long a delete waits to answer after its KILLED event went out. */
  deleteAnswerDelayMs = 0;

  /** The next call of `method` ("create", "delete", "pause", "resume", "updateEndTime", …) waits for `release()`. */
  holdNext(method: Method): Hold {
    let reach!: (sandboxID: string) => void;
    let release!: () => void;
    const reached = new Promise<string>((resolve) => {
      reach = resolve;
    });
    const released = new Promise<void>((resolve) => {
      release = resolve;
    });
    this.holds.push({ method, reach, released });
    return { reached, release };
  }

  /** The node says `type` for a sandbox on its event stream, whatever it holds (a create in flight). */
  announce(sandboxID: string, type: SandboxEventType, reason: string): void {
    this.emit({ sandboxId: sandboxID, type, reason });
  }

  /** The node stops a sandbox on its own (end time, runtime died) and says so on the event stream. */
  stopOutOfBand(
    sandboxID: string,
    type: SandboxEventType = SandboxEventType.EXPIRED,
    reason = "end time reached",
  ): void {
    const sandbox = this.sandboxes.get(sandboxID);
    if (!sandbox) return;
    clearTimeout(sandbox.timer);
    this.sandboxes.delete(sandboxID);
    this.emit({ sandboxId: sandboxID, type, reason });
  }

  /**
   * The node pauses a running sandbox on its own (auto-pause at its end time); `silently` leaves
   * out the PAUSED event (as if it were missed).
   */
  pauseOutOfBand(sandboxID: string, options: { silently?: boolean; memory?: boolean } = {}): void {
    this.beginPauseOutOfBand(sandboxID, options).finish();
  }

  /**
   * The node begins a pause of its own (PAUSING, unless `silently`) and holds it there until
   * `finish` (paused, PAUSED) or `fail` (running on, RESUMED with reason "pause failed").
   */
  beginPauseOutOfBand(
    sandboxID: string,
    options: { silently?: boolean; memory?: boolean } = {},
  ): { finish(): void; fail(): void } {
    const sandbox = this.sandboxes.get(sandboxID);
    if (sandbox?.state !== "running") throw new Error(`fake: '${sandboxID}' is not running`);
    sandbox.state = "pausing";
    clearTimeout(sandbox.timer);
    const reason = "end time reached";
    if (!options.silently) this.emit({ sandboxId: sandboxID, type: SandboxEventType.PAUSING, reason });
    return {
      finish: () => this.pauseNow(sandbox, options.memory ?? true, reason, options.silently),
      fail: () => {
        sandbox.state = "running";
        this.schedule(sandbox);
        this.emit({ sandboxId: sandboxID, type: SandboxEventType.RESUMED, reason: "pause failed" });
      },
    };
  }

  /** Something else (another API process) resumes a paused sandbox on the node. */
  resumeOutOfBand(sandboxID: string, endTime = new Date(Date.now() + 60_000)): void {
    const sandbox = this.sandboxes.get(sandboxID);
    if (sandbox?.state !== "paused") throw new Error(`fake: '${sandboxID}' is not paused`);
    this.resumeNow(sandbox, endTime);
  }

  /** The node forgets a sandbox without an event (as if the event were lost). */
  dropSilently(sandboxID: string): void {
    const sandbox = this.sandboxes.get(sandboxID);
    if (sandbox) clearTimeout(sandbox.timer);
    this.sandboxes.delete(sandboxID);
  }

  /** Number of calls of `method` so far (for one sandbox when given). */
  count(method: Method, sandboxID?: string): number {
    return this.calls.filter(
      (c) => c.method === method && (sandboxID === undefined || c.sandboxID === sandboxID),
    ).length;
  }

  /**
   * The node goes away (every call, and its event streams, fail as unavailable) or comes back
   * (`false`), holding what it held: the API reconnects and reconciles.
   */
  goDown(down = true): void {
    this.setDown(down);
    this.streamEpoch++;
    for (const listener of this.listeners) listener({ sandboxId: "" });
  }

  /** Number of open WatchEvents streams. */
  get watchers(): number {
    return this.listeners.size;
  }

  transport(): Transport {
    return createRouterTransport(({ service }) => {
      service(SandboxService, this.service());
      service(TemplateService, this.templates.service());
      service(VolumeService, this.volumes.service());
    });
  }

  close(): void {
    for (const sandbox of this.sandboxes.values()) clearTimeout(sandbox.timer);
    this.sandboxes.clear();
  }

  private service(): ServiceImpl<typeof SandboxService> {
    return {
      create: async (req) => {
        const config = req.sandbox;
        this.record("create", config?.sandboxId);
        if (!config || !req.endTime)
          throw new ConnectError("sandbox and end_time are required", Code.InvalidArgument);
        const snapshot = config.snapshotId ? this.snapshots.get(config.snapshotId) : undefined;
        if (config.snapshotId && snapshot?.teamID !== config.teamId) {
          throw new ConnectError(`snapshot '${config.snapshotId}' not found on this node`, Code.NotFound);
        }
        const known = config.snapshotId
          ? true
          : config.buildId
            ? this.templates.ready.has(config.buildId)
            : config.templateId === "base";
        if (!known) throw new ConnectError(`template '${config.templateId}' not found`, Code.NotFound);
        if (this.sandboxes.has(config.sandboxId)) throw new ConnectError("exists", Code.AlreadyExists);
        await this.held("create", config.sandboxId);
        const sandbox: FakeSandbox = {
          config,
          state: "running",
          startTime: new Date(),
          endTime: timestampDate(req.endTime),
          // Loopback: nothing listens on envd's port there, so metric reads fail fast.
          hostAddress: "127.0.0.1",
          startKind: "cold",
          pausedWithMemory: undefined,
          timer: setTimeout(() => undefined, 0),
        };
        this.sandboxes.set(config.sandboxId, sandbox);
        this.schedule(sandbox);
        this.emit({ sandboxId: config.sandboxId, type: SandboxEventType.CREATED });
        return { sandbox: this.info(sandbox) };
      },
      get: (req) => {
        this.record("get", req.sandboxId);
        return { sandbox: this.info(this.find(req.sandboxId)) };
      },
      logs: (req) => {
        this.record("logs", req.sandboxId);
        return { entries: this.nodeLogs.get(req.sandboxId) ?? [] };
      },
      list: () => {
        this.record("list");
        return { sandboxes: [...this.sandboxes.values()].map((s) => this.info(s)) };
      },
      delete: async (req) => {
        this.record("delete", req.sandboxId);
        const sandbox = this.find(req.sandboxId);
        await this.held("delete", req.sandboxId);
        clearTimeout(sandbox.timer);
        this.sandboxes.delete(req.sandboxId);
        this.unpublish(sandbox);
        this.emit({ sandboxId: req.sandboxId, type: SandboxEventType.KILLED, reason: "request" });
        // A real node's answer can come after its event has reached the API's watcher.
        if (this.deleteAnswerDelayMs) await new Promise((r) => setTimeout(r, this.deleteAnswerDelayMs));
        return {};
      },
      metrics: async (req) => {
        this.record("metrics", req.sandboxId);
        const start = req.start ? Number(req.start.seconds) : undefined;
        const end = req.end ? Number(req.end.seconds) : undefined;
        this.lastMetricsRequest = { start, end, stepSeconds: req.stepSeconds, latest: req.latest };
        const kept = this.metricSamples.get(req.sandboxId);
        if (!kept || kept.teamID !== req.teamId) return { samples: [] };
        const samples = kept.samples
          .filter((s) => (start === undefined || s.time >= start) && (end === undefined || s.time <= end))
          .map((s) => ({
            time: { seconds: BigInt(s.time), nanos: 0 },
            cpuCount: 2,
            cpuUsedPct: s.cpuUsedPct,
            memUsed: 100n * 2n ** 20n,
            memTotal: 512n * 2n ** 20n,
            memCache: 0n,
            diskUsed: 2n ** 30n,
            diskTotal: 10n * 2n ** 30n,
          }));
        return { samples: req.latest ? samples.slice(-1) : samples };
      },
      updateEndTime: async (req) => {
        this.record("updateEndTime", req.sandboxId);
        await this.held("updateEndTime", req.sandboxId);
        const sandbox = this.find(req.sandboxId);
        if (!req.endTime) throw new ConnectError("end_time is required", Code.InvalidArgument);
        if (sandbox.state !== "running") {
          throw new ConnectError(`sandbox is ${sandbox.state}, not running`, Code.FailedPrecondition);
        }
        sandbox.endTime = timestampDate(req.endTime);
        this.schedule(sandbox);
        return {};
      },
      updateNetwork: (req) => {
        this.record("updateNetwork", req.sandboxId);
        const sandbox = this.find(req.sandboxId);
        if (sandbox.state !== "running" && sandbox.state !== "paused") {
          throw new ConnectError(`sandbox is ${sandbox.state}`, Code.FailedPrecondition);
        }
        sandbox.config.allowInternetAccess = req.allowInternetAccess;
        sandbox.config.allowOut = req.allowOut;
        sandbox.config.denyOut = req.denyOut;
        return {};
      },
      pause: async (req) => {
        this.record("pause", req.sandboxId);
        this.transitions.push({ method: "pause", sandboxID: req.sandboxId, memory: req.memory });
        const sandbox = this.find(req.sandboxId);
        if (sandbox.state !== "running") {
          throw new ConnectError(`sandbox is ${sandbox.state}, not running`, Code.FailedPrecondition);
        }
        sandbox.state = "pausing";
        clearTimeout(sandbox.timer);
        this.emit({ sandboxId: req.sandboxId, type: SandboxEventType.PAUSING, reason: "request" });
        await this.held("pause", req.sandboxId);
        if (this.sandboxes.get(req.sandboxId) !== sandbox) throw new ConnectError("deleted", Code.NotFound);
        this.pauseNow(sandbox, req.memory ?? true, "request");
        return { sandbox: this.info(sandbox) };
      },
      resume: async (req) => {
        this.record("resume", req.sandboxId);
        this.transitions.push({ method: "resume", sandboxID: req.sandboxId, reboot: req.reboot });
        if (req.artifactGeneration) this.fetchPublished(req.sandboxId, req.artifactGeneration);
        const sandbox = this.find(req.sandboxId);
        if (!req.endTime) throw new ConnectError("end_time is required", Code.InvalidArgument);
        if (sandbox.state !== "paused") {
          throw new ConnectError(`sandbox is ${sandbox.state}, not paused`, Code.FailedPrecondition);
        }
        sandbox.state = "resuming";
        await this.held("resume", req.sandboxId);
        if (this.sandboxes.get(req.sandboxId) !== sandbox) throw new ConnectError("deleted", Code.NotFound);
        this.resumeNow(sandbox, timestampDate(req.endTime));
        return { sandbox: this.info(sandbox) };
      },
      snapshot: async (req) => {
        this.record("snapshot", req.sandboxId);
        const sandbox = this.find(req.sandboxId);
        if (sandbox.state !== "running") {
          throw new ConnectError(`sandbox is ${sandbox.state}, not running`, Code.FailedPrecondition);
        }
        await this.held("snapshot", req.sandboxId);
        if (this.snapshots.has(req.snapshotId)) throw new ConnectError("exists", Code.AlreadyExists);
        this.snapshots.set(req.snapshotId, {
          teamID: sandbox.config.teamId,
          sourceSandboxID: req.sandboxId,
          config: sandbox.config,
        });
        return { snapshot: { snapshotId: req.snapshotId, sourceSandboxId: req.sandboxId } };
      },
      deleteSnapshot: (req) => {
        this.record("deleteSnapshot", req.snapshotId);
        if (!this.snapshots.delete(req.snapshotId)) {
          throw new ConnectError(`snapshot '${req.snapshotId}' not found on this node`, Code.NotFound);
        }
        return {};
      },
      fork: async (req) => {
        this.record("fork", req.sandboxId);
        const source = this.find(req.sandboxId);
        if (source.state !== "running") {
          throw new ConnectError(`sandbox is ${source.state}, not running`, Code.FailedPrecondition);
        }
        await this.held("fork", req.sandboxId);
        const results = req.forks.map((target, i) => {
          const failure = this.failForks.get(i);
          if (failure) return { errorCode: failure.code, errorMessage: failure.message };
          const sandbox: FakeSandbox = {
            config: {
              ...source.config,
              sandboxId: target.sandboxId,
              envdAccessToken: target.envdAccessToken,
            },
            state: "running",
            startTime: new Date(),
            endTime: target.endTime ? timestampDate(target.endTime) : new Date(Date.now() + 60_000),
            hostAddress: "127.0.0.1",
            startKind: "cold",
            pausedWithMemory: undefined,
            timer: setTimeout(() => undefined, 0),
          };
          this.sandboxes.set(target.sandboxId, sandbox);
          this.schedule(sandbox);
          this.emit({ sandboxId: target.sandboxId, type: SandboxEventType.CREATED });
          return { sandbox: this.info(sandbox) };
        });
        this.failForks.clear();
        return { results };
      },
      watchEvents: (_req, ctx) => {
        if (this.isDown) throw new ConnectError("fake node is down", Code.Unavailable);
        return this.stream(ctx.signal);
      },
    };
  }

  private pauseNow(sandbox: FakeSandbox, memory: boolean, reason: string, silently = false): void {
    clearTimeout(sandbox.timer);
    sandbox.state = "paused";
    sandbox.hostAddress = "";
    sandbox.pausedWithMemory = memory;
    sandbox.generation = (sandbox.generation ?? 0) + 1;
    sandbox.published = 0;
    if (this.artifacts) {
      this.artifacts.set(`${sandbox.config.sandboxId}/${sandbox.generation}`, {
        config: sandbox.config,
        memory,
      });
      sandbox.published = sandbox.generation;
    }
    if (!silently) this.emit({ sandboxId: sandbox.config.sandboxId, type: SandboxEventType.PAUSED, reason });
  }

  /** A published pause this node does not hold (or holds an earlier pause of) becomes its own. */
  private fetchPublished(sandboxID: string, generation: number): void {
    const local = this.sandboxes.get(sandboxID);
    if (local && (local.state !== "paused" || (local.generation ?? 0) >= generation)) return;
    const published = this.artifacts?.get(`${sandboxID}/${generation}`);
    if (!published) {
      throw new ConnectError(
        `pause ${generation} of '${sandboxID}' is not published`,
        Code.FailedPrecondition,
      );
    }
    if (local) clearTimeout(local.timer);
    this.sandboxes.set(sandboxID, {
      config: { ...published.config },
      state: "paused",
      startTime: new Date(),
      endTime: new Date(),
      hostAddress: "",
      startKind: "cold",
      pausedWithMemory: published.memory,
      timer: setTimeout(() => undefined, 0),
      generation,
      published: generation,
    });
  }

  private unpublish(sandbox: FakeSandbox): void {
    if (sandbox.published) this.artifacts?.delete(`${sandbox.config.sandboxId}/${sandbox.published}`);
    sandbox.published = 0;
  }

  private resumeNow(sandbox: FakeSandbox, endTime: Date): void {
    this.unpublish(sandbox);
    sandbox.state = "running";
    sandbox.hostAddress = `127.0.0.${this.nextHost}`;
    this.nextHost = this.nextHost >= 254 ? 2 : this.nextHost + 1;
    sandbox.startTime = new Date();
    sandbox.endTime = endTime;
    sandbox.startKind = "resume";
    this.schedule(sandbox);
    this.emit({ sandboxId: sandbox.config.sandboxId, type: SandboxEventType.RESUMED });
  }

  private async *stream(signal: AbortSignal): AsyncGenerator<EventInit> {
    if (this.down) throw new ConnectError("connect ECONNREFUSED", Code.Unavailable);
    const epoch = this.streamEpoch;
    const queue: EventInit[] = [];
    let wake: (() => void) | undefined;
    const listener = (event: EventInit) => {
      queue.push(event);
      wake?.();
    };
    const onAbort = () => wake?.();
    this.listeners.add(listener);
    signal.addEventListener("abort", onAbort, { once: true });
    try {
      while (!signal.aborted) {
        if (this.streamEpoch !== epoch) throw new ConnectError("connection reset", Code.Unavailable);
        const event = queue.shift();
        if (event?.type === DOWN_EVENT) throw new ConnectError("fake node went down", Code.Unavailable);
        if (event) {
          yield event;
          continue;
        }
        await new Promise<void>((resolve) => {
          wake = resolve;
        });
        wake = undefined;
      }
    } finally {
      this.listeners.delete(listener);
      signal.removeEventListener("abort", onAbort);
    }
  }

  private record(method: Method, sandboxID?: string): void {
    // A call to a node that is down was still made (and counted): it fails as a refused connection.
    this.calls.push({ method, sandboxID });
    if (this.isDown) throw new ConnectError("fake node is down", Code.Unavailable);
    const i = this.failures.findIndex((f) => f.method === method);
    if (i >= 0) {
      const [failure] = this.failures.splice(i, 1);
      throw failure!.error;
    }
  }

  private async held(method: Method, sandboxID: string): Promise<void> {
    const i = this.holds.findIndex((h) => h.method === method);
    if (i < 0) return;
    const [hold] = this.holds.splice(i, 1);
    hold!.reach(sandboxID);
    await hold!.released;
  }

  private find(sandboxID: string): FakeSandbox {
    const sandbox = this.sandboxes.get(sandboxID);
    if (!sandbox) throw new ConnectError(`sandbox '${sandboxID}' not found on this node`, Code.NotFound);
    return sandbox;
  }

  /** At the end time: a pause for auto_pause sandboxes, otherwise a kill (EXPIRED). */
  private schedule(sandbox: FakeSandbox): void {
    clearTimeout(sandbox.timer);
    const delay = Math.max(0, sandbox.endTime.getTime() - Date.now());
    // Timers cap at 2^31-1 ms; longer end times are simply never reached in a test.
    sandbox.timer = setTimeout(
      () => {
        if (sandbox.state !== "running") return;
        if (sandbox.config.autoPause) {
          this.pauseOutOfBand(sandbox.config.sandboxId, { memory: sandbox.config.autoPauseMemory ?? true });
        } else {
          this.stopOutOfBand(sandbox.config.sandboxId);
        }
      },
      Math.min(delay, 2 ** 31 - 1),
    );
    sandbox.timer.unref();
  }

  private info(sandbox: FakeSandbox): MessageInitShape<typeof SandboxInfoSchema> {
    return {
      config: { ...sandbox.config, envdAccessToken: "" },
      state: STATES[sandbox.state],
      startTime: timestampFromDate(sandbox.startTime),
      endTime: timestampFromDate(sandbox.endTime),
      hostAddress: sandbox.hostAddress,
      envdVersion: this.envdVersion,
      lifecycleId: `fake-${sandbox.config.sandboxId}-${sandbox.startTime.getTime()}`,
      startKind: sandbox.startKind,
      artifactGeneration: sandbox.state === "paused" ? (sandbox.published ?? 0) : 0,
    };
  }

  private emit(event: { sandboxId: string; type: SandboxEventType; reason?: string }): void {
    const full: EventInit = { ...event, time: timestampFromDate(new Date()) };
    for (const listener of this.listeners) listener(full);
  }
}

const STATES: Record<FakeState, SandboxState> = {
  running: SandboxState.RUNNING,
  pausing: SandboxState.PAUSING,
  paused: SandboxState.PAUSED,
  resuming: SandboxState.RESUMING,
};
