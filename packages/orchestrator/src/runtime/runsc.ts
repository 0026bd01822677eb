import { readFile, rm } from "node:fs/promises";
import { CommandError, runCommand } from "@moat/shared";

/** A boot or restore that has not detached by then is stuck: it is killed and the create fails. */
const DETACH_TIMEOUT_MS = 120_000;

export interface RunscOptions {
  /** The runsc binary (see setup/runsc-install.ts). */
  binary: string;
  /** runsc's state directory (--root): only moat's containers live there. */
  stateDir: string;
  platform: "systrap" | "ptrace";
}

export interface ContainerState {
  id: string;
  pid: number;
  status: "created" | "running" | "stopped" | "paused" | string;
  bundle: string;
}

/**
 * The runsc CLI, for one state directory. Containers use gVisor's own network stack in the netns
 * named in their spec, and no rootfs overlay of gVisor's own: writes go through to the host overlay
 * so that they survive pause and resume.
 */
export class Runsc {
  constructor(private readonly options: RunscOptions) {}

  private globalFlags(): string[] {
    return [
      "--root",
      this.options.stateDir,
      `--platform=${this.options.platform}`,
      "--network=sandbox",
      "--overlay2=none",
      // A checkpoint resets the TCP connections still open (gVisor cannot save them) instead of
      // refusing; envd closes its own first (see /freeze).
      "--net-disconnect-ok",
    ];
  }

  /**
   * `runsc run --detach`. runsc hands its stdout/stderr to the sandbox, so a caller reading them
   * would wait for the sandbox's whole life: they go to `logFile` instead.
   */
  async run(id: string, bundle: string, logFile: string): Promise<number> {
    return this.detached(["run", "--detach", "--bundle", bundle], id, logFile);
  }

  /** `runsc restore --detach` of a checkpoint image into a new container; logs as for run. */
  async restore(id: string, bundle: string, imageDir: string, logFile: string): Promise<number> {
    return this.detached(["restore", "--detach", "--bundle", bundle, "--image-path", imageDir], id, logFile);
  }

  /**
   * Saves the container's memory and processes to `imageDir`; the container stops once saved, or
   * with `leaveRunning` carries on (a paused one stays paused until `resume`). Either way every
   * TCP connection of the sandbox is reset (gVisor cannot save them). Uncompressed: an idle
   * sandbox's image is ~20 MB and saves and loads twice as fast as with flate.
   */
  async checkpoint(id: string, imageDir: string, options: { leaveRunning?: boolean } = {}): Promise<void> {
    await runCommand(
      [
        this.options.binary,
        ...this.globalFlags(),
        "checkpoint",
        "--compression=none",
        ...(options.leaveRunning ? ["--leave-running"] : []),
        "--image-path",
        imageDir,
        id,
      ],
      { timeoutMs: 120_000 },
    );
  }

  /** Stops every task of the sandbox where it is (its state stays in memory) until `resume`. */
  async pause(id: string): Promise<void> {
    await runCommand([this.options.binary, ...this.globalFlags(), "pause", id], { timeoutMs: 20_000 });
  }

  async resume(id: string): Promise<void> {
    await runCommand([this.options.binary, ...this.globalFlags(), "resume", id], { timeoutMs: 20_000 });
  }

  /** Runs a detaching command; answers the sandbox process's pid (from --pid-file: no `state` call). */
  private async detached(args: string[], id: string, logFile: string): Promise<number> {
    const pidFile = `${logFile}.pid`;
    await rm(pidFile, { force: true });
    try {
      await runCommand([this.options.binary, ...this.globalFlags(), ...args, "--pid-file", pidFile, id], {
        outputFile: logFile,
        timeoutMs: DETACH_TIMEOUT_MS,
      });
    } catch (err) {
      if (!(err instanceof CommandError)) throw err;
      // Its output went to the log, which says why.
      const tail = (await readFile(logFile, "utf8").catch(() => "")).slice(-2000);
      throw new CommandError(
        ["runsc", args[0] ?? "", id],
        err.exitCode,
        err.signal,
        tail || err.stderrTail,
        err.timedOut,
      );
    }
    return Number((await readFile(pidFile, "utf8")).trim());
  }

  async kill(id: string, signal = "KILL"): Promise<void> {
    try {
      await runCommand([this.options.binary, ...this.globalFlags(), "kill", "--all", id, signal], {
        timeoutMs: 10_000,
      });
    } catch (err) {
      if (isGone(err)) return;
      throw err;
    }
  }

  /** Kills and deletes a container; one that does not exist is not an error. */
  async destroy(id: string): Promise<void> {
    try {
      await runCommand([this.options.binary, ...this.globalFlags(), "delete", "--force", id], {
        timeoutMs: 20_000,
      });
    } catch (err) {
      if (isGone(err)) return;
      throw err;
    }
  }

  async state(id: string): Promise<ContainerState | undefined> {
    try {
      const { stdout } = await runCommand([this.options.binary, ...this.globalFlags(), "state", id]);
      return JSON.parse(stdout) as ContainerState;
    } catch (err) {
      if (isGone(err)) return undefined;
      throw err;
    }
  }

  async list(): Promise<ContainerState[]> {
    const { stdout } = await runCommand([
      this.options.binary,
      ...this.globalFlags(),
      "list",
      "--format=json",
    ]);
    const parsed = JSON.parse(stdout || "[]") as ContainerState[] | null;
    return parsed ?? [];
  }
}

function isGone(err: unknown): boolean {
  return err instanceof CommandError && /does not exist|not found|no such/i.test(err.stderrTail);
}
