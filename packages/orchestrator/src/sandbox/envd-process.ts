/**
 * Commands the node itself runs in a sandbox through envd's process service (template build steps,
 * a template's start and ready commands), with their output as lines.
 */
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { ENVD_PORT, START_COMMAND_TAG } from "@moat/shared";
import { Process } from "@moat/shared/gen/envd/process";

export interface OutputLine {
  stream: "stdout" | "stderr";
  line: string;
}

export interface CommandSpec {
  /** A shell command line: run with bash when the sandbox has it, else sh. */
  command: string;
  user: string;
  cwd?: string;
  envs?: Record<string, string>;
  /** The sandbox's envd access token, once /init has set one. */
  accessToken?: string;
}

export interface CommandExit {
  exitCode: number;
  /** envd's description when the process did not exit normally (e.g. "signal: killed"). */
  error?: string;
  /** The last lines of its output, for error messages. */
  tail: string[];
}

/** Non-login, as Docker's RUN: a login shell's /etc/profile would reset PATH set by ENV. */
const SHELL_ARGS = ["-c", 'if [ -x /bin/bash ]; then exec /bin/bash -c "$1"; fi; exec /bin/sh -c "$1"', "sh"];
const TAIL_LINES = 20;

function processClient(hostAddress: string) {
  const transport = createConnectTransport({
    baseUrl: `http://${hostAddress}:${ENVD_PORT}`,
    httpVersion: "1.1",
  });
  return createClient(Process, transport);
}

function startRequest(spec: CommandSpec, tag?: string) {
  return {
    ...(tag ? { tag } : {}),
    process: {
      cmd: "/bin/sh",
      args: [...SHELL_ARGS, spec.command],
      envs: spec.envs ?? {},
      cwd: spec.cwd,
    },
  };
}

function authHeaders(spec: CommandSpec): Record<string, string> {
  return {
    authorization: `Basic ${Buffer.from(`${spec.user}:`).toString("base64")}`,
    ...(spec.accessToken ? { "x-access-token": spec.accessToken } : {}),
  };
}

/** Splits output chunks into lines per stream; `tail` keeps the last ones. */
function lineSplitter(onLine?: (line: OutputLine) => void) {
  const rest = { stdout: "", stderr: "" };
  const tail: string[] = [];
  const emit = (stream: "stdout" | "stderr", line: string) => {
    tail.push(line);
    if (tail.length > TAIL_LINES) tail.shift();
    onLine?.({ stream, line });
  };
  return {
    tail,
    push(stream: "stdout" | "stderr", chunk: Uint8Array) {
      const parts = (rest[stream] + Buffer.from(chunk).toString("utf8")).split("\n");
      rest[stream] = parts.pop() ?? "";
      for (const part of parts) emit(stream, part.replace(/\r$/, ""));
    },
    flush() {
      for (const stream of ["stdout", "stderr"] as const) {
        if (rest[stream]) emit(stream, rest[stream]);
        rest[stream] = "";
      }
    },
  };
}

/** Runs a command to its end. */
export async function runInSandbox(
  hostAddress: string,
  spec: CommandSpec,
  onOutput?: (line: OutputLine) => void,
  signal?: AbortSignal,
): Promise<CommandExit> {
  const lines = lineSplitter(onOutput);
  const stream = processClient(hostAddress).start(startRequest(spec), {
    headers: authHeaders(spec),
    signal,
  });
  try {
    for await (const res of stream) {
      const event = res.event?.event;
      if (event?.case === "data") {
        const out = event.value.output;
        if (out.case === "stdout" || out.case === "stderr") lines.push(out.case, out.value);
      } else if (event?.case === "end") {
        lines.flush();
        return { exitCode: event.value.exitCode, error: event.value.error, tail: lines.tail };
      }
    }
  } catch (err) {
    lines.flush();
    throw describe(err, spec);
  }
  lines.flush();
  throw new Error(`the command's output ended without an exit code: ${spec.command}`);
}

export interface StartedCommand {
  pid: number;
  /** Set once the process has exited (while its output is still being followed). */
  exited?: { exitCode: number };
  /** Stops following its output; the process goes on running. */
  detach(): void;
}

/** Starts a command that keeps running after this call (a template's start command). */
export async function startInSandbox(
  hostAddress: string,
  spec: CommandSpec,
  onOutput?: (line: OutputLine) => void,
): Promise<StartedCommand> {
  const lines = lineSplitter(onOutput);
  const abort = new AbortController();
  // Tagged: envd logs its output for as long as it runs (the sandbox's log on the node).
  const stream = processClient(hostAddress).start(startRequest(spec, START_COMMAND_TAG), {
    headers: authHeaders(spec),
    signal: abort.signal,
  });
  const iterator = stream[Symbol.asyncIterator]();
  let pid: number | undefined;
  try {
    while (pid === undefined) {
      const next = await iterator.next();
      if (next.done) throw new Error("envd ended the process stream before it started");
      const event = next.value.event?.event;
      if (event?.case === "start") pid = event.value.pid;
    }
  } catch (err) {
    abort.abort();
    throw describe(err, spec);
  }
  const started: StartedCommand = {
    pid,
    detach: () => {
      lines.flush();
      abort.abort();
    },
  };
  void (async () => {
    try {
      for (;;) {
        const next = await iterator.next();
        if (next.done) break;
        const event = next.value.event?.event;
        if (event?.case === "data") {
          const out = event.value.output;
          if (out.case === "stdout" || out.case === "stderr") lines.push(out.case, out.value);
        } else if (event?.case === "end") {
          lines.flush();
          started.exited = { exitCode: event.value.exitCode };
          break;
        }
      }
    } catch {
      // Detached, or the sandbox went away: the caller learns of it from its next command.
    }
  })();
  return started;
}

function describe(err: unknown, spec: CommandSpec): Error {
  const connect = ConnectError.from(err);
  if (connect.code === Code.Canceled) return connect;
  return new Error(`could not run '${spec.command}' as ${spec.user}: ${connect.rawMessage}`, { cause: err });
}
