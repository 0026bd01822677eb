import type { ProcessService } from "./service.js";

/** List: every process started through envd that is still running. */
export function list(service: ProcessService) {
  return {
    processes: service.runningProcesses().map((h) => ({ pid: h.pid, tag: h.tag, config: h.config })),
  };
}
