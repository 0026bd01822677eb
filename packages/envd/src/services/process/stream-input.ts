import type { HandlerContext } from "@connectrpc/connect";
import { Code, ConnectError } from "@connectrpc/connect";
import type { StreamInputRequest } from "@moat/shared/gen/envd/process";
import type { ProcessHandle } from "./handle.js";
import { writeInput } from "./send-input.js";
import type { ProcessService } from "./service.js";

/** StreamInput: a client stream whose first message selects the process and the rest carry input. */
export async function streamInput(
  service: ProcessService,
  requests: AsyncIterable<StreamInputRequest>,
  hctx: HandlerContext,
) {
  let handle: ProcessHandle | undefined;
  for await (const req of requests) {
    if (hctx.signal.aborted) break;
    const event = req.event;
    if (event.case === "start") {
      handle = service.find(event.value.process);
    } else if (event.case === "data") {
      if (!handle) throw new ConnectError("the first message must be start", Code.FailedPrecondition);
      writeInput(handle, event.value.input);
    }
  }
  return {};
}
