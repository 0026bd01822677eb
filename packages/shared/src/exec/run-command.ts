import { spawn } from "node:child_process";

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
}

export interface RunResult {
  stdout: string;
  stderr: string;
  exitCode: number;
}

const STDERR_TAIL_BYTES = 4096;

/**
 * The one way moat runs a host command: an argv (no shell), a timeout, an abort signal, and a
 * CommandError with the stderr tail when it fails. stdout is kept whole (callers parse it).
 */
export function runCommand(argv: readonly string[], options: RunOptions = {}): Promise<RunResult> {
  const [file, ...args] = argv;
  if (!file) return Promise.reject(new Error("runCommand: empty argv"));
  return new Promise((resolve, reject) => {
    const child = spawn(file, args, {
      stdio: [options.input === undefined ? "ignore" : "pipe", "pipe", "pipe"],
      env: options.env ?? process.env,
      cwd: options.cwd,
    });
    const stdout: Buffer[] = [];
    let stderr = "";
    let timedOut = false;
    child.stdout!.on("data", (chunk: Buffer) => {
      stdout.push(chunk);
      options.onOutput?.(chunk.toString(), "stdout");
    });
    child.stderr!.on("data", (chunk: Buffer) => {
      const text = chunk.toString();
      stderr = (stderr + text).slice(-STDERR_TAIL_BYTES * 4);
      options.onOutput?.(text, "stderr");
    });
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill("SIGKILL");
    }, options.timeoutMs ?? 60_000);
    const onAbort = () => child.kill("SIGKILL");
    options.signal?.addEventListener("abort", onAbort, { once: true });
    if (options.input !== undefined) child.stdin!.end(options.input);
    child.once("error", (err) => {
      clearTimeout(timer);
      options.signal?.removeEventListener("abort", onAbort);
      reject(Object.assign(new CommandError(argv, null, null, err.message), { cause: err }));
    });
    child.once("close", (code, signal) => {
      clearTimeout(timer);
      options.signal?.removeEventListener("abort", onAbort);
      const out = Buffer.concat(stdout).toString();
      if (code === 0 || (code !== null && options.okCodes?.includes(code))) {
        resolve({ stdout: out, stderr, exitCode: code });
      } else {
        reject(new CommandError(argv, code, signal, stderr.slice(-STDERR_TAIL_BYTES), timedOut));
      }
    });
  });
}
