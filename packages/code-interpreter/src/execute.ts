/**
 * One execute_request on a kernel, turned into the lines E2B's code interpreter streams: stdout,
 * stderr, results (every MIME type of display_data and execute_result), the error, the execution
 * count. It ends when the kernel has both replied and gone idle, or when its channel closed.
 */
import type { ChannelEvent, KernelChannel, KernelMessage } from "./kernels.js";

export type OutputLine =
  | { type: "stdout" | "stderr"; text: string; timestamp: string }
  | ({ type: "result"; is_main_result: boolean } & Record<string, unknown>)
  | { type: "error"; name: string; value: string; traceback: string }
  | { type: "number_of_executions"; execution_count: number };

/** MIME types the SDK's Result has a field for; anything else goes under `extra`. */
const FORMATS: Record<string, string> = {
  "text/plain": "text",
  "text/html": "html",
  "text/markdown": "markdown",
  "image/svg+xml": "svg",
  "image/png": "png",
  "image/jpeg": "jpeg",
  "application/pdf": "pdf",
  "text/latex": "latex",
  "application/json": "json",
  "application/javascript": "javascript",
  "e2b/data": "data",
  "e2b/chart": "chart",
};

export function resultLine(data: Record<string, unknown>, isMain: boolean): OutputLine {
  const line: Record<string, unknown> = { type: "result", is_main_result: isMain };
  const extra: Record<string, unknown> = {};
  for (const [mime, value] of Object.entries(data)) {
    const field = FORMATS[mime];
    if (field) line[field] = Array.isArray(value) ? value.join("") : value;
    else extra[mime] = value;
  }
  if (Object.keys(extra).length > 0) line.extra = extra;
  return line as OutputLine;
}

export interface ExecuteOptions {
  code: string;
  /** Silent: no outputs, no history, no execution count (moat's own snippets). */
  silent?: boolean;
  emit(line: OutputLine): void;
  /** Called with pause/resume, so a slow client holds the kernel's messages back. */
  flow?: (control: { pause(): void; resume(): void }) => void;
  /** Whether the kernel's process still runs: asked every few seconds until the execution ends. */
  alive?: () => Promise<boolean>;
}

export interface ExecuteOutcome {
  /** The error the kernel reported, if any. */
  error?: { name: string; value: string; traceback: string };
  /** Set when the channel closed before the execution ended, or the kernel died. */
  lost?: string;
  /** The kernel's process is gone (the execution never ends by itself). */
  died?: boolean;
}

const ALIVE_CHECK_MS = 2_000;
const IDLE_GRACE_MS = 2_000;

export async function execute(channel: KernelChannel, options: ExecuteOptions): Promise<ExecuteOutcome> {
  const outcome: ExecuteOutcome = {};
  let replied = false;
  let idle = false;
  let replyError: ExecuteOutcome["error"];
  let finish!: () => void;
  const ended = new Promise<void>((resolve) => {
    finish = resolve;
  });
  // After the reply, an iopub `idle` that never comes (its subscription was still reconnecting,
  // e.g. right after a restore) ends the execution once iopub has been quiet for a while.
  // Quiet only counts while iopub is read: held back for a slow client, it is not quiet.
  let quiet: NodeJS.Timeout | undefined;
  let paused = false;
  const armQuiet = () => {
    clearTimeout(quiet);
    if (replied && !paused) quiet = setTimeout(finish, IDLE_GRACE_MS);
  };
  const onEvent = (event: ChannelEvent) => {
    if (event.kind === "closed") {
      outcome.lost = event.reason;
      finish();
      return;
    }
    handle(event.message);
    if (replied && idle) finish();
    else armQuiet();
  };
  const handle = (message: KernelMessage) => {
    const content = message.content;
    const timestamp = message.header.date ?? new Date().toISOString();
    switch (message.header.msg_type) {
      case "stream": {
        const name = content.name === "stderr" ? "stderr" : "stdout";
        options.emit({ type: name, text: String(content.text ?? ""), timestamp });
        break;
      }
      case "execute_result":
        options.emit(resultLine((content.data ?? {}) as Record<string, unknown>, true));
        break;
      case "display_data":
        options.emit(resultLine((content.data ?? {}) as Record<string, unknown>, false));
        break;
      case "error": {
        const error = errorOf(content);
        outcome.error = error;
        options.emit({ type: "error", ...error });
        break;
      }
      case "execute_input":
        if (typeof content.execution_count === "number")
          options.emit({ type: "number_of_executions", execution_count: content.execution_count });
        break;
      case "status":
        if (content.execution_state === "idle") idle = true;
        break;
      case "execute_reply":
        replied = true;
        // Kernels that report a failure only in the reply (no `error` message on iopub). The
        // reply (shell) can arrive before the iopub `error`: it is reported at the end, when
        // iopub had none.
        if (content.status === "error") replyError = errorOf(content);
        else if (content.status === "aborted")
          replyError = { name: "ExecutionAborted", value: "the execution was aborted", traceback: "" };
        break;
    }
  };
  const request = await channel.request(
    "execute_request",
    "shell",
    {
      code: options.code,
      silent: options.silent ?? false,
      store_history: !options.silent,
      user_expressions: {},
      allow_stdin: false,
      // A context runs one execution at a time, so only moat's own snippets (env vars restored
      // after the code) can be queued behind it: an error in the code must not abort them.
      stop_on_error: false,
    },
    onEvent,
  );
  options.flow?.({
    pause() {
      paused = true;
      clearTimeout(quiet);
      request.pause();
    },
    resume() {
      paused = false;
      request.resume();
      armQuiet();
    },
  });
  let done = false;
  const check = options.alive
    ? setInterval(async () => {
        if (done || (await options.alive!().catch(() => true)) || done) return;
        outcome.died = true;
        outcome.lost = "the kernel died";
        finish();
      }, ALIVE_CHECK_MS)
    : undefined;
  try {
    await ended;
    if (replyError && !outcome.error && !outcome.lost) {
      outcome.error = replyError;
      options.emit({ type: "error", ...replyError });
    }
  } finally {
    done = true;
    clearInterval(check);
    clearTimeout(quiet);
    request.resume();
    request.done();
  }
  return outcome;
}

function errorOf(content: Record<string, unknown>): { name: string; value: string; traceback: string } {
  const traceback = Array.isArray(content.traceback)
    ? content.traceback.join("\n")
    : String(content.traceback ?? "");
  return { name: String(content.ename ?? "Error"), value: String(content.evalue ?? ""), traceback };
}
