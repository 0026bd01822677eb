/**
 * The node proxy of an orchestrator running in this process: `moat orchestrator` starts it (a
 * fleet's client proxies reach the node's sandboxes through it); `moat up` does not need it, its
 * client proxy reaches sandboxes directly, but may start it with `--node-proxy-port`.
 */
import { type NodeProxy, startNodeProxy } from "@moat/client-proxy";
import type { Orchestrator } from "@moat/orchestrator";
import type { Logger } from "@moat/shared";

/** The default port of the node proxy (`--proxy-port`, MOAT_NODE_PROXY_PORT). */
export const DEFAULT_NODE_PROXY_PORT = 5007;

export function startOrchestratorNodeProxy(
  orchestrator: Pick<Orchestrator, "manager" | "nodeToken">,
  options: { host: string; port: number; logger: Logger },
): Promise<NodeProxy> {
  const { manager } = orchestrator;
  return startNodeProxy({
    host: options.host,
    port: options.port,
    token: orchestrator.nodeToken,
    logger: options.logger,
    // Only a running user sandbox takes traffic; the client proxy waits out the other states.
    lookup(sandboxID) {
      const sandbox = findSandbox(manager, sandboxID);
      return sandbox?.state === "running" && sandbox.kind === "user" ? sandbox.hostAddress : undefined;
    },
  });
}

function findSandbox(manager: Orchestrator["manager"], sandboxID: string) {
  try {
    return manager.get(sandboxID);
  } catch {
    return undefined;
  }
}
