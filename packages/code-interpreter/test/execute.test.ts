/**
 * execute() against a scripted channel: the orders in which a kernel's shell reply and iopub
 * messages can arrive (the reply travels on another socket than the outputs).
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { execute, type OutputLine } from "../src/execute.js";
import type { ChannelEvent, KernelChannel, KernelMessage } from "../src/kernels.js";

const message = (msgType: string, content: Record<string, unknown>): ChannelEvent => ({
  kind: "message",
  message: {
    header: { msg_id: "m", msg_type: msgType },
    parent_header: { msg_id: "request" },
    metadata: {},
    content,
  } as KernelMessage,
});

/** A channel that answers the request with `events`, in this order, one per tick. */
function scripted(events: ChannelEvent[]): KernelChannel {
  return {
    request(_type: string, _channel: string, _content: unknown, listener: (e: ChannelEvent) => void) {
      void (async () => {
        for (const event of events) {
          await new Promise((r) => setImmediate(r));
          listener(event);
        }
      })();
      return { msgID: "request", done: () => undefined, pause: () => undefined, resume: () => undefined };
    },
  } as unknown as KernelChannel;
}

const error = { ename: "ZeroDivisionError", evalue: "division by zero", traceback: ["tb"] };

for (const [name, events] of [
  [
    "iopub error before the reply",
    [
      message("status", { execution_state: "busy" }),
      message("error", error),
      message("execute_reply", { status: "error", ...error }),
      message("status", { execution_state: "idle" }),
    ],
  ],
  [
    "the reply before the iopub error",
    [
      message("status", { execution_state: "busy" }),
      message("execute_reply", { status: "error", ...error }),
      message("error", error),
      message("status", { execution_state: "idle" }),
    ],
  ],
] as const) {
  test(`one error line when the kernel sends ${name}`, async () => {
    const lines: OutputLine[] = [];
    const outcome = await execute(scripted([...events]), { code: "1/0", emit: (l) => lines.push(l) });
    assert.deepEqual(
      lines.filter((l) => l.type === "error").map((l) => (l as { name: string }).name),
      ["ZeroDivisionError"],
    );
    assert.equal(outcome.error?.name, "ZeroDivisionError");
  });
}

test("a kernel that reports its error only in the reply still gives one error line", async () => {
  const lines: OutputLine[] = [];
  await execute(
    scripted([
      message("execute_reply", { status: "error", ...error }),
      message("status", { execution_state: "idle" }),
    ]),
    { code: "x", emit: (l) => lines.push(l) },
  );
  assert.deepEqual(
    lines.filter((l) => l.type === "error").map((l) => (l as { name: string }).name),
    ["ZeroDivisionError"],
  );
});

test("output held back for a slow client past the idle grace is still all delivered", async () => {
  // The reply comes first; then the client is slow (the server pauses iopub) for longer than the
  // grace after which a reply without an idle ends the execution. Paused is not quiet.
  let paused = false;
  let wake: (() => void) | undefined;
  let control: { pause(): void; resume(): void } | undefined;
  const channel = {
    request(_type: string, _channel: string, _content: unknown, listener: (e: ChannelEvent) => void) {
      void (async () => {
        for (const event of [
          message("status", { execution_state: "busy" }),
          message("execute_reply", { status: "ok" }),
          message("stream", { name: "stdout", text: "a" }),
          message("stream", { name: "stdout", text: "b" }),
          message("status", { execution_state: "idle" }),
        ]) {
          await new Promise((r) => setImmediate(r));
          if (paused) await new Promise<void>((r) => (wake = r));
          listener(event);
        }
      })();
      return {
        msgID: "request",
        done: () => undefined,
        pause: () => {
          paused = true;
        },
        resume: () => {
          paused = false;
          wake?.();
        },
      };
    },
  } as unknown as KernelChannel;
  const text: string[] = [];
  let clientResumed = false;
  await execute(channel, {
    code: "print('ab')",
    flow: (c) => {
      control = c;
    },
    emit: (line) => {
      if (line.type !== "stdout") return;
      text.push(line.text);
      if (text.length === 1) {
        control!.pause();
        setTimeout(() => {
          clientResumed = true;
          control!.resume();
        }, 2_500);
      }
    },
  });
  assert.ok(clientResumed, "the execution did not end while the client held the output back");
  assert.deepEqual(text, ["a", "b"]);
});
