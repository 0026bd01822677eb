import { spawn } from "node:child_process";
import { closeSync, openSync } from "node:fs";

/** How a command ended, before it is judged a success or a CommandError. */
export interface Outcome {
  exitCode: number | null;
  signal: NodeJS.Signals | null;
  stdout: Buffer;
  /** The last few KiB of stderr. */
  stderr: string;
  timedOut: boolean;
  /** The command could not be started (ENOENT, EACCES…): why. */
  spawnError?: string;
}

/** What runHere needs of RunOptions: plain data, so that it can cross to the spawn helper. */
export interface SpawnRequest {
  argv: readonly string[];
  timeoutMs: number;
  input?: string | Buffer;
  env: NodeJS.ProcessEnv;
  cwd?: string;
  /** stdout and stderr appended to this file instead of kept (a command that detaches). */
  outputFile?: string;
}

const STDERR_KEPT_BYTES = 16384;

/**
 * Runs one command as a child of this process and collects how it ended. `cancel` is set to a
 * function that SIGKILLs it (an abort).
 */
export function runHere(
  request: SpawnRequest,
  hooks: {
    onOutput?: (chunk: string, stream: "stdout" | "stderr") => void;
    onCancel?: (cancel: () => void) => void;
  } = {},
): Promise<Outcome> {
  const [file, ...args] = request.argv;
  return new Promise((resolve) => {
    let outputFd: number | undefined;
    try {
      if (request.outputFile !== undefined) outputFd = openSync(request.outputFile, "a", 0o600);
    } catch (err) {
      resolve(failedToStart((err as Error).message));
      return;
    }
    let child: ReturnType<typeof spawn>;
    try {
      child = spawn(file!, args, {
        stdio: [request.input === undefined ? "ignore" : "pipe", outputFd ?? "pipe", outputFd ?? "pipe"],
        env: request.env,
        cwd: request.cwd,
      });
    } catch (err) {
      // What no process can be given (a NUL in an argument or the environment): an answer, never
      // a throw, which would take the spawn helper down with every other command it runs.
      resolve(failedToStart((err as Error).message));
      return;
    } finally {
      // The child holds its own copy of the file now, or there is no child.
      if (outputFd !== undefined) closeSync(outputFd);
    }
    const stdout: Buffer[] = [];
    let stderr = "";
    let timedOut = false;
    child.stdout?.on("data", (chunk: Buffer) => {
      stdout.push(chunk);
      hooks.onOutput?.(chunk.toString(), "stdout");
    });
    child.stderr?.on("data", (chunk: Buffer) => {
      const text = chunk.toString();
      stderr = (stderr + text).slice(-STDERR_KEPT_BYTES);
      hooks.onOutput?.(text, "stderr");
    });
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill("SIGKILL");
    }, request.timeoutMs);
    hooks.onCancel?.(() => child.kill("SIGKILL"));
    // A command that exits without reading its input must not crash this process with EPIPE.
    child.stdin?.on("error", () => undefined);
    if (request.input !== undefined) child.stdin!.end(request.input);
    child.once("error", (err) => {
      clearTimeout(timer);
      resolve(failedToStart(err.message));
    });
    child.once("close", (exitCode, signal) => {
      clearTimeout(timer);
      resolve({ exitCode, signal, stdout: Buffer.concat(stdout), stderr, timedOut });
    });
  });
}

/** The outcome of a command that never ran (or whose end is unknown): why. */
export function failedToStart(message: string): Outcome {
  return {
    exitCode: null,
    signal: null,
    stdout: Buffer.alloc(0),
    stderr: "",
    timedOut: false,
    spawnError: message,
  };
}
