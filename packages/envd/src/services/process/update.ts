import { Code, ConnectError } from "@connectrpc/connect";
import type { UpdateRequest } from "@moat/shared/gen/envd/process";
import type { ProcessService } from "./service.js";

/** Update: resizes a process's pty. */
export function update(service: ProcessService, req: UpdateRequest) {
  const handle = service.find(req.process);
  const size = req.pty?.size;
  if (!size) throw new ConnectError("pty.size is required", Code.InvalidArgument);
  handle.resize(size.cols, size.rows);
  return {};
}
