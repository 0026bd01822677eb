import type { HandlerContext, ServiceImpl } from "@connectrpc/connect";
import { Code, ConnectError } from "@connectrpc/connect";
import type { Process, ProcessSelector } from "@moat/shared/gen/envd/process";
import { type EnvdContext, keepaliveIntervalMs } from "../../context.js";
import { closeStdin } from "./close-stdin.js";
import { connect } from "./connect.js";
import type { ProcessEventInit, ProcessHandle } from "./handle.js";
import { list } from "./list.js";
import { sendInput } from "./send-input.js";
import { sendSignal } from "./send-signal.js";
import { start } from "./start.js";
import { streamInput } from "./stream-input.js";
import { update } from "./update.js";

/** How many exited processes are kept so that Connect can still report their end. */
const RETAINED_EXITS = 256;

/**
 * process.Process: the table of processes started through envd. Each RPC lives in its own file;
 * this class owns the table and the stream loop they share.
 */
export class ProcessService {
  private readonly running = new Map<number, ProcessHandle>();
  private readonly exited = new Map<number, ProcessHandle>();

  constructor(readonly ctx: EnvdContext) {}

  implementation(): ServiceImpl<typeof Process> {
    return {
      start: (req, hctx) => start(this, req, hctx),
      connect: (req, hctx) => connect(this, req, hctx),
      list: () => list(this),
      sendInput: (req) => sendInput(this, req),
      streamInput: (reqs, hctx) => streamInput(this, reqs, hctx),
      sendSignal: (req) => sendSignal(this, req),
      update: (req) => update(this, req),
      closeStdin: (req) => closeStdin(this, req),
    };
  }

  register(handle: ProcessHandle): void {
    this.running.set(handle.pid, handle);
    void handle.whenEnded().then(() => {
      this.running.delete(handle.pid);
      this.exited.set(handle.pid, handle);
      if (this.exited.size > RETAINED_EXITS) this.exited.delete(this.exited.keys().next().value!);
    });
  }

  runningProcesses(): ProcessHandle[] {
    return [...this.running.values()];
  }

  /** The process a selector names, running or recently exited; not_found otherwise. */
  find(selector: ProcessSelector | undefined, { includeExited = false } = {}): ProcessHandle {
    const sel = selector?.selector;
    if (!sel?.case) throw new ConnectError("process selector (pid or tag) is required", Code.InvalidArgument);
    const matches = (h: ProcessHandle) => (sel.case === "pid" ? h.pid === sel.value : h.tag === sel.value);
    for (const h of this.running.values()) if (matches(h)) return h;
    if (includeExited) for (const h of this.exited.values()) if (matches(h)) return h;
    const what = sel.case === "pid" ? `pid ${sel.value}` : `tag '${sel.value}'`;
    throw new ConnectError(`process with ${what} not found`, Code.NotFound);
  }

  /**
   * The stream a Start or Connect answers with: start{pid}, the process's events from now on with
   * keepalives while it is quiet, and its end. A client that goes away only detaches; the process
   * keeps running.
   */
  async *follow(handle: ProcessHandle, hctx: HandlerContext): AsyncGenerator<{ event: ProcessEventInit }> {
    const channel = handle.subscribe();
    const idleMs = keepaliveIntervalMs(hctx.requestHeader);
    try {
      yield { event: { event: { case: "start", value: { pid: handle.pid } } } };
      for (;;) {
        // An aborted call ends the stream with its reason as the error.
        const next = await channel.pull(hctx.signal, idleMs).catch((err: unknown) => {
          throw ConnectError.from(err);
        });
        if (next.kind === "done") return;
        yield { event: next.kind === "idle" ? { event: { case: "keepalive", value: {} } } : next.value };
      }
    } finally {
      handle.unsubscribe(channel);
    }
  }

  /** Kills every running process (envd shutdown). */
  async close(): Promise<void> {
    const handles = [...this.running.values()];
    for (const h of handles) h.signal("SIGKILL");
    await Promise.race([
      Promise.all(handles.map((h) => h.whenEnded())),
      new Promise((r) => setTimeout(r, 2000)),
    ]);
  }
}
