import { Code, ConnectError } from "@connectrpc/connect";
import { type SendSignalRequest, Signal } from "@moat/shared/gen/envd/process";
import type { ProcessService } from "./service.js";

/** SendSignal: SIGKILL or SIGTERM to a process and its group. */
export function sendSignal(service: ProcessService, req: SendSignalRequest) {
  const handle = service.find(req.process);
  switch (req.signal) {
    case Signal.SIGKILL:
      handle.signal("SIGKILL");
      break;
    case Signal.SIGTERM:
      handle.signal("SIGTERM");
      break;
    default:
      throw new ConnectError(`unsupported signal ${req.signal}`, Code.InvalidArgument);
  }
  return {};
}
