/**
 * An orchestrator in memory: the SandboxService methods over a Map, served through Connect's
 * in-memory router transport, so the API under test talks to it with its real client (codes,
 * streams and all). End times are enforced with timers and announced as EXPIRED events, as the
 * real node does. Tests steer it with `failNext`, `stopOutOfBand` and `calls`.
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
  SandboxService,
  SandboxState,
} from "@moat/shared/gen/orchestrator";

type EventInit = MessageInitShape<typeof SandboxEventSchema>;

interface FakeSandbox {
  config: SandboxConfig;
  startTime: Date;
  endTime: Date;
  hostAddress: string;
  timer: NodeJS.Timeout;
}

export class FakeOrchestrator {
  readonly sandboxes = new Map<string, FakeSandbox>();
  /** Every call by method name, in order (the request's sandbox id, when it has one). */
  readonly calls: Array<{ method: string; sandboxID?: string }> = [];
  envdVersion = "0.6.13";
  private readonly listeners = new Set<(event: EventInit) => void>();
  private readonly failures: Array<{ method: string; error: ConnectError }> = [];

  /** The next call of `method` fails with `code`. */
  failNext(
    method: "create" | "delete" | "updateEndTime" | "list" | "get",
    code: Code,
    message = "injected",
  ): void {
    this.failures.push({ method, error: new ConnectError(message, code) });
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

  /** The node forgets a sandbox without an event (as if the event were lost). */
  dropSilently(sandboxID: string): void {
    const sandbox = this.sandboxes.get(sandboxID);
    if (sandbox) clearTimeout(sandbox.timer);
    this.sandboxes.delete(sandboxID);
  }

  /** Number of open WatchEvents streams. */
  get watchers(): number {
    return this.listeners.size;
  }

  transport(): Transport {
    return createRouterTransport(({ service }) => service(SandboxService, this.service()));
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
        if (config.templateId !== "base")
          throw new ConnectError(`template '${config.templateId}' not found`, Code.NotFound);
        if (this.sandboxes.has(config.sandboxId)) throw new ConnectError("exists", Code.AlreadyExists);
        const sandbox: FakeSandbox = {
          config,
          startTime: new Date(),
          endTime: timestampDate(req.endTime),
          // Loopback: nothing listens on envd's port there, so metric reads fail fast.
          hostAddress: "127.0.0.1",
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
      list: () => {
        this.record("list");
        return { sandboxes: [...this.sandboxes.values()].map((s) => this.info(s)) };
      },
      delete: (req) => {
        this.record("delete", req.sandboxId);
        const sandbox = this.find(req.sandboxId);
        clearTimeout(sandbox.timer);
        this.sandboxes.delete(req.sandboxId);
        this.emit({ sandboxId: req.sandboxId, type: SandboxEventType.KILLED, reason: "request" });
        return {};
      },
      updateEndTime: (req) => {
        this.record("updateEndTime", req.sandboxId);
        const sandbox = this.find(req.sandboxId);
        if (!req.endTime) throw new ConnectError("end_time is required", Code.InvalidArgument);
        sandbox.endTime = timestampDate(req.endTime);
        this.schedule(sandbox);
        return {};
      },
      watchEvents: (_req, ctx) => this.stream(ctx.signal),
    };
  }

  private async *stream(signal: AbortSignal): AsyncGenerator<EventInit> {
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
        const event = queue.shift();
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

  private record(method: string, sandboxID?: string): void {
    this.calls.push({ method, sandboxID });
    const i = this.failures.findIndex((f) => f.method === method);
    if (i >= 0) {
      const [failure] = this.failures.splice(i, 1);
      throw failure!.error;
    }
  }

  private find(sandboxID: string): FakeSandbox {
    const sandbox = this.sandboxes.get(sandboxID);
    if (!sandbox) throw new ConnectError(`sandbox '${sandboxID}' not found on this node`, Code.NotFound);
    return sandbox;
  }

  private schedule(sandbox: FakeSandbox): void {
    clearTimeout(sandbox.timer);
    const delay = Math.max(0, sandbox.endTime.getTime() - Date.now());
    // Timers cap at 2^31-1 ms; longer end times are simply never reached in a test.
    sandbox.timer = setTimeout(
      () => this.stopOutOfBand(sandbox.config.sandboxId),
      Math.min(delay, 2 ** 31 - 1),
    );
    sandbox.timer.unref();
  }

  private info(sandbox: FakeSandbox): MessageInitShape<typeof SandboxInfoSchema> {
    return {
      config: { ...sandbox.config, envdAccessToken: "" },
      state: SandboxState.RUNNING,
      startTime: timestampFromDate(sandbox.startTime),
      endTime: timestampFromDate(sandbox.endTime),
      hostAddress: sandbox.hostAddress,
      envdVersion: this.envdVersion,
      lifecycleId: `fake-${sandbox.config.sandboxId}`,
    };
  }

  private emit(event: Omit<EventInit, "time">): void {
    const full: EventInit = { ...event, time: timestampFromDate(new Date()) };
    for (const listener of this.listeners) listener(full);
  }
}
