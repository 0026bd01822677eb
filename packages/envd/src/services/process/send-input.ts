import { Code, ConnectError } from "@connectrpc/connect";
import type { ProcessInput, SendInputRequest } from "@moat/shared/gen/envd/process";
import type { ProcessHandle } from "./handle.js";
import type { ProcessService } from "./service.js";

/** SendInput: writes to a process's stdin or pty. */
export function sendInput(service: ProcessService, req: SendInputRequest) {
  writeInput(service.find(req.process), req.input);
  return {};
}

export function writeInput(handle: ProcessHandle, input: ProcessInput | undefined): void {
  const data = input?.input;
  switch (data?.case) {
    case "stdin":
      handle.writeStdin(data.value);
      return;
    case "pty":
      handle.writePTY(data.value);
      return;
    default:
      throw new ConnectError("input (stdin or pty) is required", Code.InvalidArgument);
  }
}
