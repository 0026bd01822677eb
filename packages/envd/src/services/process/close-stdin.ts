import type { CloseStdinRequest } from "@moat/shared/gen/envd/process";
import type { ProcessService } from "./service.js";

/** CloseStdin: ends a (non-pty) process's stdin so that it sees EOF. */
export function closeStdin(service: ProcessService, req: CloseStdinRequest) {
  service.find(req.process).closeStdin();
  return {};
}
