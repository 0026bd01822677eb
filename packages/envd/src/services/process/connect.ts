import type { HandlerContext } from "@connectrpc/connect";
import type { ConnectRequest } from "@moat/shared/gen/envd/process";
import type { ProcessService } from "./service.js";

/** Connect: attaches to a running process; output from now on, then its end (replayed if it already exited). */
export async function* connect(service: ProcessService, req: ConnectRequest, hctx: HandlerContext) {
  const handle = service.find(req.process, { includeExited: true });
  yield* service.follow(handle, hctx);
}
