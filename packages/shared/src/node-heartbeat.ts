/**
 * What a node sends the API every 2 s (`PUT /internal/nodes/{nodeID}`): the wire contract between
 * the orchestrator's heartbeat and the API's node registry, which validates it again.
 */
export interface NodeCapacity {
  cpus: number;
  memoryMB: number;
}

export interface NodeLoad {
  /** CPU busy over the last interval, percent of the whole node (0-100). */
  cpuPercent: number;
  memoryUsedMB: number;
  sandboxes: number;
  starting: number;
  /** Warm pool entries ready to be claimed, all templates together. */
  poolReady: number;
}

export interface NodeHeartbeat {
  rpcURL: string;
  proxyURL: string;
  version: string;
  runtime: string;
  labels: string[];
  capacity: NodeCapacity;
  load: NodeLoad;
  /** Template build ids the node holds locally, at most MAX_HEARTBEAT_BUILDS. */
  builds: string[];
}

export const MAX_HEARTBEAT_BUILDS = 1000;
