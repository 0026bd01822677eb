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
