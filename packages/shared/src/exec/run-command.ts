import { runHere, type SpawnRequest } from "./run-here.js";
import { spawnHelper } from "./spawn-helper.js";

/** A command that failed: its argv, how it ended and the tail of what it wrote to stderr. */
export class CommandError extends Error {
  constructor(
    readonly argv: readonly string[],
    readonly exitCode: number | null,
    readonly signal: NodeJS.Signals | null,
    readonly stderrTail: string,
    readonly timedOut = false,
  ) {
    const how = timedOut ? "timed out" : signal ? `was killed by ${signal}` : `exited with ${exitCode}`;
    super(`${argv.join(" ")} ${how}${stderrTail ? `: ${stderrTail.trim()}` : ""}`);
    this.name = "CommandError";
  }
}

export interface RunOptions {
  /** Kill the command (SIGKILL) after this long; default 60 s. */
  timeoutMs?: number;
  signal?: AbortSignal;
  /** Written to the command's stdin, then stdin is closed. */
  input?: string | Buffer;
  env?: NodeJS.ProcessEnv;
  cwd?: string;
  /** Called with each chunk of stdout/stderr as it arrives (for progress). */
  onOutput?: (chunk: string, stream: "stdout" | "stderr") => void;
  /** Exit codes that count as success besides 0. */
  okCodes?: number[];
  /**
   * stdout and stderr appended to this file (created 0600) instead of kept: for a command that
   * detaches and hands its output to what it leaves running, which a pipe would wait on.
   */
  outputFile?: string;
}

export interface RunResult {
  stdout: string;
  stderr: string;
  exitCode: number;
}

const STDERR_TAIL_BYTES = 4096;

/**
 * The one way moat runs a host command: an argv (no shell), a timeout, an abort signal, and a
 * CommandError with the stderr tail when it fails. stdout is kept whole (callers parse it). Where
 * a process started the spawn helper (spawn-helper.ts), the helper starts it.
 */
export async function runCommand(argv: readonly string[], options: RunOptions = {}): Promise<RunResult> {
  if (!argv[0]) throw new Error("runCommand: empty argv");
  const request: SpawnRequest = {
    argv,
    timeoutMs: options.timeoutMs ?? 60_000,
    input: options.input,
    env: options.env ?? process.env,
    cwd: options.cwd,
    outputFile: options.outputFile,
  };
  const helper = spawnHelper();
  const outcome = helper
    ? await helper.run(request, options.onOutput, options.signal)
    : await runHere(request, {
        onOutput: options.onOutput,
        onCancel: (cancel) => options.signal?.addEventListener("abort", cancel, { once: true }),
      });
  const { exitCode, signal, stderr, timedOut } = outcome;
  if (outcome.spawnError !== undefined) throw new CommandError(argv, null, null, outcome.spawnError);
  if (exitCode === 0 || (exitCode !== null && options.okCodes?.includes(exitCode))) {
    return { stdout: outcome.stdout.toString(), stderr, exitCode };
  }
  throw new CommandError(argv, exitCode, signal, stderr.slice(-STDERR_TAIL_BYTES), timedOut);
}
