/**
 * The spawn helper's process (spawn-helper.ts): runs the commands its parent sends over the IPC
 * channel and answers how each ended. It lives as long as the channel: when its parent exits, or
 * dies, the channel closes and so does it. Ctrl-C and SIGTERM are for its parent, which still
 * needs it to run the commands of its shutdown.
 */
import { type Outcome, runHere, type SpawnRequest } from "./run-here.js";

export type HelperRequest =
  | { type: "run"; id: number; request: SpawnRequest; stream: boolean }
  | { type: "cancel"; id: number };

export type HelperAnswer =
  | { type: "output"; id: number; chunk: string; stream: "stdout" | "stderr" }
  | { type: "done"; id: number; outcome: Outcome };

const cancels = new Map<number, () => void>();
const send = (answer: HelperAnswer) => process.send?.(answer);

for (const signal of ["SIGINT", "SIGTERM", "SIGHUP"] as const) process.on(signal, () => undefined);
process.on("disconnect", () => process.exit(0));
process.on("message", (message: HelperRequest) => {
  if (message.type === "cancel") {
    cancels.get(message.id)?.();
    return;
  }
  const { id, request, stream } = message;
  void runHere(request, {
    onOutput: stream ? (chunk, from) => send({ type: "output", id, chunk, stream: from }) : undefined,
    onCancel: (cancel) => cancels.set(id, cancel),
  }).then((outcome) => {
    cancels.delete(id);
    send({ type: "done", id, outcome });
  });
});
