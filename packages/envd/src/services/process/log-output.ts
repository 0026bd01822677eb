/**
 * The output of a template's start command, written to envd's own log (its stderr, which the node
 * keeps as the sandbox's log): the command runs for the sandbox's whole life, while the node follows
 * its output only until it is ready, and not at all in sandboxes restored from the template's
 * snapshot. One log line per output line: stdout at info, stderr at error, each cut at
 * MAX_LINE_CHARS.
 */
import type { Logger } from "@moat/shared";
import type { ProcessHandle } from "./handle.js";

/** Longer lines are cut: a line without a newline must not grow envd's memory without bound. */
export const MAX_LINE_CHARS = 8192;

export function logOutput(handle: ProcessHandle, logger: Logger): void {
  const channel = handle.subscribe();
  const pending = { stdout: "", stderr: "" };
  const write = (stream: "stdout" | "stderr", line: string, truncated = false) => {
    const fields = { source: "start", stream, ...(truncated ? { truncated: true } : {}) };
    if (stream === "stderr") logger.error(fields, line);
    else logger.info(fields, line);
  };
  const push = (stream: "stdout" | "stderr", chunk: Uint8Array) => {
    const parts = (pending[stream] + Buffer.from(chunk).toString("utf8")).split("\n");
    pending[stream] = parts.pop() ?? "";
    for (const part of parts) write(stream, part.replace(/\r$/, "").slice(0, MAX_LINE_CHARS));
    if (pending[stream].length > MAX_LINE_CHARS) {
      write(stream, pending[stream].slice(0, MAX_LINE_CHARS), true);
      pending[stream] = "";
    }
  };
  void (async () => {
    try {
      for await (const next of channel) {
        const event = next.event;
        if (event?.case !== "data") continue;
        const out = event.value.output;
        if (out?.case === "stdout" || out?.case === "stderr") push(out.case, out.value);
        else if (out?.case === "pty") push("stdout", out.value);
      }
    } finally {
      for (const stream of ["stdout", "stderr"] as const) if (pending[stream]) write(stream, pending[stream]);
      handle.unsubscribe(channel);
    }
  })();
}
