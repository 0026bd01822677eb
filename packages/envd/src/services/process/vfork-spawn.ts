/**
 * A child process started without fork() (native/spawn.c): what ProcessHandle uses of Node's
 * ChildProcess (pid, stdin, stdout, stderr, "exit" and "close"), with the same meaning. Under
 * gVisor a fork costs more than the rest of a short command; this path skips it.
 *
 * Off when MOAT_ENVD_SPAWN=node, and when the addon cannot be loaded (not built): then envd uses
 * Node's child_process as before. It asks no more of the image's C library than Node does.
 */
import { EventEmitter } from "node:events";
import { createRequire } from "node:module";
import { Socket } from "node:net";
import { constants as osConstants } from "node:os";
import path from "node:path";
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
  ): [number, number, number, number];
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

export interface VforkSpawnOptions {
  cwd: string;
  env: Record<string, string>;
  uid?: number;
  gid?: number;
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
    const envp = Object.entries(options.env).map(([k, v]) => `${k}=${v}`);
    for (const s of [cmd, ...args, ...envp, options.cwd]) {
      // What no process can be given; Node's spawn refuses it the same way.
      if (s.includes("\0")) throw new TypeError("The argument must be a string without null bytes");
    }
    let fds: [number, number, number, number];
    try {
      fds = addon.spawn(
        cmd,
        [cmd, ...args],
        envp,
        options.cwd,
        options.uid ?? -1,
        options.gid ?? -1,
        true,
        options.stdin,
        (status) => this.onExit(status),
      );
    } catch (err) {
      const errno = (err as { errno?: number }).errno;
      if (typeof errno !== "number") throw err;
      const code = getSystemErrorName(errno);
      throw Object.assign(new Error(`spawn ${cmd} ${code}`), { errno, code, syscall: `spawn ${cmd}` });
    }
    const [pid, stdinFd, stdoutFd, stderrFd] = fds;
    this.pid = pid;
    this.stdin = stdinFd >= 0 ? new Socket({ fd: stdinFd, readable: false, writable: true }) : null;
    this.stdout = new Socket({ fd: stdoutFd, readable: true, writable: false });
    this.stderr = new Socket({ fd: stderrFd, readable: true, writable: false });
    for (const stream of [this.stdout, this.stderr]) stream.once("close", () => this.maybeClose());
  }

  private onExit(status: number): void {
    if (status === -1) {
      this.exitCode = -1;
    } else if ((status & 0x7f) === 0) {
      this.exitCode = (status >> 8) & 0xff;
    } else {
      this.signalCode = signalName(status & 0x7f);
    }
    // As Node does: nothing can read the child's stdin any more.
    this.stdin?.destroy();
    this.emit("exit", this.exitCode, this.signalCode);
    this.maybeClose();
  }

  private maybeClose(): void {
    if (--this.closesNeeded === 0) this.emit("close", this.exitCode, this.signalCode);
  }
}
