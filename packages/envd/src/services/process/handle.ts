/**
 * A process started through envd: a plain child with pipes, or a child on a pseudo-terminal. It
 * fans its output out to every stream attached to it (the Start stream and any Connect streams) and
 * keeps its end event so that a Connect after exit can still report it.
 *
 * Every process runs in a session and process group of its own, so a signal reaches the whole tree
 * the command started (`bash -c "a | b"`), not just the shell.
 */
import { ChildProcess, spawn } from "node:child_process";
import type { MessageInitShape } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import { Channel } from "@moat/shared";
import type { ProcessConfig, ProcessEventSchema } from "@moat/shared/gen/envd/process";
import type { User } from "../../auth/users.js";
import { signalName, VforkChild, VforkTerminal, vforkSpawner } from "./vfork-spawn.js";

/** What a process handle holds: Node's child, or one started without fork (vfork-spawn.ts). */
type Child = ChildProcess | VforkChild;

/** What a process handle uses of a terminal: node-pty's IPty (its output as Buffers), or a VforkTerminal. */
interface Terminal {
  readonly pid: number;
  onData(listener: (chunk: Buffer) => void): unknown;
  onExit(listener: (e: { exitCode: number; signal?: number }) => void): unknown;
  write(data: Buffer): void;
  resize(cols: number, rows: number): void;
  pause(): void;
  resume(): void;
}

export type ProcessEventInit = MessageInitShape<typeof ProcessEventSchema>;
export type EndEventInit = { exitCode: number; exited: boolean; status: string; error?: string };

export interface SpawnOptions {
  config: ProcessConfig;
  tag: string | undefined;
  user: User;
  /** Whether to switch to the user's uid/gid (only possible when envd runs as root). */
  switchUser: boolean;
  env: Record<string, string>;
  cwd: string;
  /** Keep a stdin pipe open for SendInput; otherwise stdin is /dev/null. */
  stdin: boolean;
  pty: { cols: number; rows: number } | undefined;
}

/** How long to wait for the output pipes to drain after the process exited, before ending anyway. */
const DRAIN_GRACE_MS = 200;
/**
 * Output one stream may have waiting before the process's output is paused (its writes block, as
 * on a full pipe) until every stream is back under the low mark: a process that writes faster than
 * a client reads must not grow envd's memory without bound.
 */
export const OUTPUT_HIGH_WATER_BYTES = 1024 * 1024;
const OUTPUT_LOW_WATER_BYTES = 256 * 1024;

export class ProcessHandle {
  readonly pid: number;
  readonly config: ProcessConfig;
  readonly tag: string | undefined;
  readonly isPTY: boolean;
  private readonly child: Child | undefined;
  private readonly terminal: Terminal | undefined;
  private readonly subscribers = new Set<Channel<ProcessEventInit>>();
  private endEvent: EndEventInit | undefined;
  /** Output reading is paused for a stream that lags behind. */
  private outputPaused = false;
  /** Once the process exited nothing more is paused: what is left in its pipes is bounded. */
  private exited = false;
  private readonly ended: Promise<void>;
  private markEnded!: () => void;

  private constructor(options: SpawnOptions, child: Child | undefined, terminal: Terminal | undefined) {
    this.config = options.config;
    this.tag = options.tag;
    this.isPTY = terminal !== undefined;
    this.child = child;
    this.terminal = terminal;
    this.pid = (child?.pid ?? terminal?.pid)!;
    this.ended = new Promise((resolve) => {
      this.markEnded = resolve;
    });
  }

  /** Starts the process. Fails with invalid_argument when the command cannot be executed. */
  static async spawn(options: SpawnOptions): Promise<ProcessHandle> {
    const ids = options.switchUser ? { uid: options.user.uid, gid: options.user.gid } : {};
    const addon = vforkSpawner();
    if (options.pty) {
      let terminal: Terminal;
      try {
        if (addon) {
          // As node-pty sets them.
          const name = options.env.TERM ?? "xterm-256color";
          terminal = new VforkTerminal(addon, options.config.cmd, options.config.args, {
            cwd: options.cwd,
            env: { ...options.env, PWD: options.cwd, TERM: name },
            cols: options.pty.cols,
            rows: options.pty.rows,
            ...ids,
          });
        } else {
          // node-pty is loaded on the first terminal only: it is a native module and envd's
          // startup inside a sandbox is on every create's critical path.
          const { spawn: spawnPTY } = await import("node-pty");
          terminal = spawnPTY(options.config.cmd, options.config.args, {
            name: options.env.TERM ?? "xterm-256color",
            cols: options.pty.cols,
            rows: options.pty.rows,
            cwd: options.cwd,
            env: options.env,
            encoding: null,
            ...ids,
          }) as unknown as Terminal;
        }
      } catch (err) {
        throw new ConnectError(`failed to start process: ${errorMessage(err)}`, Code.InvalidArgument);
      }
      const handle = new ProcessHandle(options, undefined, terminal);
      handle.attachPTY(terminal);
      return handle;
    }

    let child: Child;
    try {
      if (addon) {
        child = new VforkChild(addon, options.config.cmd, options.config.args, {
          cwd: options.cwd,
          env: options.env,
          stdin: options.stdin,
          ...ids,
        });
      } else {
        child = spawn(options.config.cmd, options.config.args, {
          cwd: options.cwd,
          env: options.env,
          stdio: [options.stdin ? "pipe" : "ignore", "pipe", "pipe"],
          detached: true,
          ...ids,
        });
      }
    } catch (err) {
      // What no process can be given: a NUL in the command, an argument or the environment, and
      // on the vfork path a command or working directory that cannot be executed or entered.
      throw new ConnectError(`failed to start process: ${errorMessage(err)}`, Code.InvalidArgument);
    }
    if (child instanceof ChildProcess && child.pid === undefined) {
      const err = await new Promise<Error>((resolve) => child.once("error", resolve));
      throw new ConnectError(`failed to start process: ${err.message}`, Code.InvalidArgument);
    }
    const handle = new ProcessHandle(options, child, undefined);
    handle.attachChild(child);
    return handle;
  }

  get running(): boolean {
    return this.endEvent === undefined;
  }

  get exit(): EndEventInit | undefined {
    return this.endEvent;
  }

  /** Resolves once the end event has been emitted. */
  whenEnded(): Promise<void> {
    return this.ended;
  }

  /** A channel of every event from now on; the caller must `unsubscribe` it. */
  subscribe(): Channel<ProcessEventInit> {
    const channel = new Channel<ProcessEventInit>({ onTake: () => this.resumeOutputIfDrained() });
    if (this.endEvent) {
      channel.push({ event: { case: "end", value: this.endEvent } });
      channel.close();
    } else {
      this.subscribers.add(channel);
    }
    return channel;
  }

  unsubscribe(channel: Channel<ProcessEventInit>): void {
    this.subscribers.delete(channel);
    channel.close();
    this.resumeOutputIfDrained();
  }

  writeStdin(data: Uint8Array): void {
    if (this.isPTY)
      throw new ConnectError("process has a pty: send pty input instead", Code.FailedPrecondition);
    const stdin = this.child?.stdin;
    if (!stdin || stdin.destroyed || stdin.writableEnded) {
      throw new ConnectError("stdin is not enabled or was closed for this process", Code.FailedPrecondition);
    }
    stdin.write(data);
  }

  writePTY(data: Uint8Array): void {
    if (!this.terminal)
      throw new ConnectError("process has no pty: send stdin input instead", Code.FailedPrecondition);
    if (!this.running) throw new ConnectError("process has exited", Code.NotFound);
    this.terminal.write(Buffer.from(data));
  }

  closeStdin(): void {
    if (this.isPTY) throw new ConnectError("cannot close stdin of a pty process", Code.FailedPrecondition);
    const stdin = this.child?.stdin;
    if (!stdin) throw new ConnectError("stdin is not enabled for this process", Code.FailedPrecondition);
    stdin.end();
  }

  resize(cols: number, rows: number): void {
    if (!this.terminal) throw new ConnectError("process has no pty to resize", Code.FailedPrecondition);
    if (!this.running) throw new ConnectError("process has exited", Code.NotFound);
    if (cols < 1 || rows < 1 || cols > 65535 || rows > 65535) {
      throw new ConnectError(`invalid pty size ${cols}x${rows}`, Code.InvalidArgument);
    }
    this.terminal.resize(cols, rows);
  }

  /** Signals the process group; a process that already exited is not an error. */
  signal(signal: NodeJS.Signals): void {
    if (!this.running) return;
    try {
      process.kill(-this.pid, signal);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "ESRCH") throw err;
      try {
        process.kill(this.pid, signal);
      } catch (inner) {
        if ((inner as NodeJS.ErrnoException).code !== "ESRCH") throw inner;
      }
    }
  }

  /** SIGKILLs the process group after `ms` unless it ended before. */
  killAfter(ms: number): void {
    const timer = setTimeout(() => this.signal("SIGKILL"), ms);
    timer.unref();
    void this.ended.then(() => clearTimeout(timer));
  }

  private broadcast(event: ProcessEventInit): void {
    for (const channel of this.subscribers) channel.push(event);
  }

  /** Hands a chunk of output to every stream, pausing the output while one of them lags. */
  private broadcastOutput(event: ProcessEventInit, size: number): void {
    let lagging = false;
    for (const channel of this.subscribers) {
      channel.push(event, size);
      lagging ||= channel.bytes > OUTPUT_HIGH_WATER_BYTES;
    }
    if (lagging && !this.outputPaused && !this.exited) {
      this.outputPaused = true;
      this.child?.stdout?.pause();
      this.child?.stderr?.pause();
      this.terminal?.pause();
    }
  }

  private resumeOutputIfDrained(): void {
    if (!this.outputPaused) return;
    if (!this.exited) {
      for (const channel of this.subscribers) if (channel.bytes > OUTPUT_LOW_WATER_BYTES) return;
    }
    this.outputPaused = false;
    this.child?.stdout?.resume();
    this.child?.stderr?.resume();
    this.terminal?.resume();
  }

  /** The process is gone: its pipes hold a bounded rest, read at once so that the end is not held up. */
  private markExited(): void {
    this.exited = true;
    this.resumeOutputIfDrained();
  }

  private finish(end: EndEventInit): void {
    if (this.endEvent) return;
    this.endEvent = end;
    this.broadcast({ event: { case: "end", value: end } });
    for (const channel of this.subscribers) channel.close();
    this.subscribers.clear();
    this.markEnded();
  }

  private attachChild(child: Child): void {
    child.stdout!.on("data", (chunk: Buffer) =>
      this.broadcastOutput(
        { event: { case: "data", value: { output: { case: "stdout", value: chunk } } } },
        chunk.length,
      ),
    );
    child.stderr!.on("data", (chunk: Buffer) =>
      this.broadcastOutput(
        { event: { case: "data", value: { output: { case: "stderr", value: chunk } } } },
        chunk.length,
      ),
    );
    // A stdin write to a process that exited must not crash envd.
    child.stdin?.on("error", () => {});
    let exitEvent: EndEventInit | undefined;
    child.once("exit", (code, signal) => {
      exitEvent = endEventFor(code, signal);
      this.markExited();
      // Output pipes can stay open in grandchildren (`cmd &`); do not wait for them forever.
      setTimeout(() => this.finish(exitEvent!), DRAIN_GRACE_MS).unref();
    });
    child.once("close", (code, signal) => this.finish(exitEvent ?? endEventFor(code, signal)));
    child.once("error", (err) =>
      this.finish({ exitCode: -1, exited: false, status: "error", error: err.message }),
    );
  }

  private attachPTY(terminal: Terminal): void {
    terminal.onData((chunk) =>
      this.broadcastOutput(
        { event: { case: "data", value: { output: { case: "pty", value: chunk } } } },
        chunk.length,
      ),
    );
    terminal.onExit(({ exitCode, signal }) => {
      this.markExited();
      const name = signal ? signalName(signal) : null;
      this.finish(endEventFor(name ? null : exitCode, name));
    });
  }
}

/** Go's wording for a wait status (`os.ProcessState.String()`), which envd reports. */
const SIGNAL_WORDS: Partial<Record<NodeJS.Signals, string>> = {
  SIGHUP: "hangup",
  SIGINT: "interrupt",
  SIGQUIT: "quit",
  SIGILL: "illegal instruction",
  SIGABRT: "aborted",
  SIGBUS: "bus error",
  SIGFPE: "floating point exception",
  SIGKILL: "killed",
  SIGUSR1: "user defined signal 1",
  SIGSEGV: "segmentation fault",
  SIGUSR2: "user defined signal 2",
  SIGPIPE: "broken pipe",
  SIGALRM: "alarm clock",
  SIGTERM: "terminated",
};

function endEventFor(code: number | null, signal: NodeJS.Signals | null): EndEventInit {
  if (signal) return { exitCode: -1, exited: false, status: `signal: ${SIGNAL_WORDS[signal] ?? signal}` };
  return { exitCode: code ?? -1, exited: true, status: `exit status ${code ?? -1}` };
}

function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
