/**
 * What the API knows of a node beyond its RPC client: its status, where its proxy is, what it
 * reported in its last heartbeat, and the sandboxes the records place on it. Static nodes (from
 * configuration) start ready with nothing reported; the node registry (registry.ts) keeps it up
 * to date from the `nodes` table and the records.
 */
import type { NodeCapacity, NodeLoad, NodeStatus } from "../db/schema.js";

export type { NodeCapacity, NodeLoad, NodeStatus };

/** What the records place on a node: live sandboxes that are not paused. */
export interface NodeAllocation {
  cpus: number;
  memoryMB: number;
  sandboxes: number;
}

export interface NodeInfo {
  status: NodeStatus;
  /** Configured in this API (`orchestrators`), rather than registered. */
  static: boolean;
  rpcURL?: string;
  proxyURL?: string;
  version?: string;
  runtime?: string;
  labels: readonly string[];
  capacity?: NodeCapacity;
  load?: NodeLoad;
  /** Template build ids the node holds locally. */
  builds: ReadonlySet<string>;
  lastHeartbeat?: Date;
  allocated: NodeAllocation;
  /** When `allocated` was read from the records. */
  allocatedAt?: Date;
}

export function staticNodeInfo(): NodeInfo {
  return {
    status: "ready",
    static: true,
    labels: [],
    builds: new Set(),
    allocated: { cpus: 0, memoryMB: 0, sandboxes: 0 },
  };
}

/** Whether new sandboxes and builds may go to the node. */
export function takesPlacements(info: NodeInfo): boolean {
  return info.status === "ready";
}
