/**
 * A child process started without fork() (native/spawn.c): what ProcessHandle uses of Node's
 * ChildProcess (pid, stdin, stdout, stderr, "exit" and "close"), with the same meaning. Under
 * gVisor a fork costs more than the rest of a short command; this path skips it.
 *
 * Off when MOAT_ENVD_SPAWN=node, and when the addon cannot be loaded (not built): then envd uses
 * Node's child_process as before. It asks no more of the image's C library than Node does.
 */
import { EventEmitter } from "node:events";
import { close, write } from "node:fs";
import { createRequire } from "node:module";
import { Socket } from "node:net";
import { constants as osConstants } from "node:os";
import path from "node:path";
import { ReadStream } from "node:tty";
import { fileURLToPath } from "node:url";
import { getSystemErrorName } from "node:util";

interface Native {
  spawn(
    file: string,
    argv: string[],
    envp: string[],
    cwd: string | null,
    uid: number,
    gid: number,
    detached: boolean,
    stdinPipe: boolean,
    onExit: (status: number) => void,
    terminal: [cols: number, rows: number] | null,
  ): [number, number, number, number];
  resize(masterFd: number, cols: number, rows: number): void;
}

/**
 * Where the addon is: node-gyp's output when this file runs from a checkout (its src or dist),
 * else beside the bundle that holds this code (envd.mjs in the sandbox's read-only mount). Never a
 * path outside the bundle's own directory: inside a sandbox that would be a file of its image.
 */
function addonPath(): string {
  const here = fileURLToPath(import.meta.url);
  const inCheckout = /[/\\](src|dist)[/\\]services[/\\]process[/\\]vfork-spawn\.[jt]s$/.test(here);
  return path.resolve(
    path.dirname(here),
    inCheckout ? "../../../build/Release" : "native",
    "moat_spawn.node",
  );
}

let native: Native | null | undefined;

/** The addon, or null when this envd spawns with Node's child_process. */
export function vforkSpawner(): Native | null {
  if (native !== undefined) return native;
  native = null;
  if (process.platform !== "linux" || process.env.MOAT_ENVD_SPAWN === "node") return native;
  try {
    native = createRequire(import.meta.url)(addonPath()) as Native;
  } catch {
    // Not built, or it does not load against this C library: envd uses child_process.
  }
  return native;
}

export interface VforkSpawnOptions extends StartOptions {
  /** A stdin pipe; otherwise stdin is /dev/null. */
  stdin: boolean;
}

const signalNames = new Map<number, NodeJS.Signals>(
  Object.entries(osConstants.signals).map(([name, number]) => [number, name as NodeJS.Signals]),
);

/** A signal's name from its number (a wait status, node-pty's exit), or null for none known. */
export function signalName(signal: number): NodeJS.Signals | null {
  return signalNames.get(signal) ?? null;
}

/** A wait status as Node reports it: [exit code, null] or [null, signal]; -1 (none to reap) is exit code -1. */
function decodeWaitStatus(status: number): [number | null, NodeJS.Signals | null] {
  if (status === -1) return [-1, null];
  if ((status & 0x7f) === 0) return [(status >> 8) & 0xff, null];
  return [null, signalName(status & 0x7f)];
}

/** What both kinds of child pass to the addon beside the command. */
interface StartOptions {
  cwd: string;
  env: Record<string, string>;
  uid?: number;
  gid?: number;
}

/**
 * The addon's spawn, with what Node's spawn does around it: a NUL in the command, an argument,
 * the environment or the cwd is refused before any process (as Node refuses it), and a failed
 * start throws `spawn <cmd> <CODE>`.
 */
function startChild(
  addon: Native,
  cmd: string,
  args: string[],
  options: StartOptions,
  stdio: { stdinPipe: boolean; terminal: [cols: number, rows: number] | null },
  onExit: (status: number) => void,
): [number, number, number, number] {
  const envp = Object.entries(options.env).map(([k, v]) => `${k}=${v}`);
  for (const s of [cmd, ...args, ...envp, options.cwd]) {
    if (s.includes("\0")) throw new TypeError("The argument must be a string without null bytes");
  }
  try {
    return addon.spawn(
      cmd,
      [cmd, ...args],
      envp,
      options.cwd,
      options.uid ?? -1,
      options.gid ?? -1,
      true,
      stdio.stdinPipe,
      onExit,
      stdio.terminal,
    );
  } catch (err) {
    const errno = (err as { errno?: number }).errno;
    if (typeof errno !== "number") throw err;
    const code = getSystemErrorName(errno);
    throw Object.assign(new Error(`spawn ${cmd} ${code}`), { errno, code, syscall: `spawn ${cmd}` });
  }
}

/**
 * A started child. Throws as Node's spawn reports a failed start: an Error whose message is
 * `spawn <cmd> <CODE>` (ENOENT for a missing command or working directory, EACCES, …).
 */
export class VforkChild extends EventEmitter {
  readonly pid: number;
  readonly stdin: Socket | null;
  readonly stdout: Socket;
  readonly stderr: Socket;
  exitCode: number | null = null;
  signalCode: NodeJS.Signals | null = null;
  /** Node's ChildProcess emits "close" once it exited and its readable pipes closed. */
  private closesNeeded = 3;

  constructor(addon: Native, cmd: string, args: string[], options: VforkSpawnOptions) {
    super();
    const [pid, stdinFd, stdoutFd, stderrFd] = startChild(
      addon,
      cmd,
      args,
      options,
      { stdinPipe: options.stdin, terminal: null },
      (status) => this.onExit(status),
    );
    this.pid = pid;
    this.stdin = stdinFd >= 0 ? new Socket({ fd: stdinFd, readable: false, writable: true }) : null;
    this.stdout = new Socket({ fd: stdoutFd, readable: true, writable: false });
    this.stderr = new Socket({ fd: stderrFd, readable: true, writable: false });
    for (const stream of [this.stdout, this.stderr]) stream.once("close", () => this.maybeClose());
  }

  private onExit(status: number): void {
    [this.exitCode, this.signalCode] = decodeWaitStatus(status);
    // As Node does: nothing can read the child's stdin any more.
    this.stdin?.destroy();
    this.emit("exit", this.exitCode, this.signalCode);
    this.maybeClose();
  }

  private maybeClose(): void {
    if (--this.closesNeeded === 0) this.emit("close", this.exitCode, this.signalCode);
  }
}

export interface VforkTerminalOptions extends StartOptions {
  cols: number;
  rows: number;
}

/** node-pty's wait after a terminal's process exited for its output to end (a background job may hold it open). */
const OUTPUT_END_GRACE_MS = 200;

/**
 * A process on a new terminal, started without fork: what ProcessHandle uses of node-pty's IPty
 * (pid, onData, onExit, write, resize, pause, resume), with node-pty's meaning. The exit is reported
 * once the terminal's output has ended (the last process holding it closed it: EIO on the master),
 * or OUTPUT_END_GRACE_MS after the process exited when something in the background still holds it.
 */
export class VforkTerminal {
  readonly pid: number;
  private readonly addon: Native;
  private readonly masterFd: number;
  private readonly reader: ReadStream;
  private readonly writerFd: number;
  /** Writes waiting for the terminal's input buffer, which the program may not be reading. */
  private readonly queue: Buffer[] = [];
  private writing = false;
  private writerClosed = false;
  private status: number | undefined;
  private outputEnded = false;
  private exitListeners: Array<(e: { exitCode: number; signal?: number }) => void> = [];
  private reported = false;
  private graceTimer: NodeJS.Timeout | undefined;

  constructor(addon: Native, cmd: string, args: string[], options: VforkTerminalOptions) {
    const [pid, masterFd, writerFd] = startChild(
      addon,
      cmd,
      args,
      options,
      { stdinPipe: false, terminal: [options.cols, options.rows] },
      (status) => this.onProcessExit(status),
    );
    this.pid = pid;
    this.addon = addon;
    this.masterFd = masterFd;
    this.writerFd = writerFd;
    this.reader = new ReadStream(masterFd);
    // EIO once no process holds the terminal any more: the end of its output, as node-pty takes it.
    this.reader.on("error", () => this.reader.destroy());
    this.reader.once("close", () => {
      this.outputEnded = true;
      this.maybeReport();
    });
  }

  onData(listener: (chunk: Buffer) => void): void {
    this.reader.on("data", listener);
  }

  onExit(listener: (e: { exitCode: number; signal?: number }) => void): void {
    this.exitListeners.push(listener);
  }

  write(data: Buffer): void {
    if (this.writerClosed || data.length === 0) return;
    this.queue.push(data);
    this.flush();
  }

  resize(cols: number, rows: number): void {
    // Not once the master is closed: its number may be another file's by then.
    if (this.reader.destroyed) throw new Error("the terminal is closed");
    this.addon.resize(this.masterFd, cols, rows);
  }

  pause(): void {
    this.reader.pause();
  }

  resume(): void {
    this.reader.resume();
  }

  private flush(): void {
    if (this.writing || this.writerClosed) return;
    const chunk = this.queue[0];
    if (!chunk) return;
    this.writing = true;
    write(this.writerFd, chunk, (err, written) => {
      this.writing = false;
      if (this.writerClosed) {
        // Closed while this write was under way: the descriptor is released only now.
        close(this.writerFd, () => {});
        return;
      }
      if (err) {
        // A full input buffer: try again on a later turn. Anything else: the terminal is gone.
        if (err.code === "EAGAIN") setImmediate(() => this.flush());
        else this.queue.length = 0;
        return;
      }
      if (written >= chunk.length) this.queue.shift();
      else this.queue[0] = chunk.subarray(written);
      this.flush();
    });
  }

  private closeWriter(): void {
    if (this.writerClosed) return;
    this.writerClosed = true;
    this.queue.length = 0;
    if (!this.writing) close(this.writerFd, () => {});
  }

  private onProcessExit(status: number): void {
    this.status = status;
    if (!this.outputEnded) {
      this.graceTimer = setTimeout(() => this.reader.destroy(), OUTPUT_END_GRACE_MS).unref();
    }
    this.maybeReport();
  }

  private maybeReport(): void {
    if (this.reported || this.status === undefined || !this.outputEnded) return;
    this.reported = true;
    clearTimeout(this.graceTimer);
    this.closeWriter();
    // node-pty's shape: a signal by number, with exit code 0.
    const [exitCode, signal] = decodeWaitStatus(this.status);
    const event = signal
      ? { exitCode: 0, signal: osConstants.signals[signal] }
      : { exitCode: exitCode ?? -1 };
    for (const listener of this.exitListeners) listener(event);
  }
}
