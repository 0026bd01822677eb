/**
 * The nodes of this API process (`ctx.nodes`): the static ones from configuration, and those that
 * registered by heartbeat (the `nodes` table, written by PUT /internal/nodes/{nodeID} in any API
 * process). Every REFRESH_MS it reads the table and the records and:
 * - adds a client (and its watcher) for a registered node that heartbeats, and replaces it when
 *   the node comes back at another address;
 * - keeps each client's `info` (status, proxy, labels, capacity, load, builds, allocation);
 * - a node whose last heartbeat is older than the timeout is unhealthy: its running, starting and
 *   pausing sandboxes are recorded killed as lost (conditional updates: one API process records
 *   each); creates skip it. When it heartbeats again it is ready (unless draining) and its watcher
 *   reconciles: what the records closed is killed on it, what they keep is adopted.
 * An API process judges heartbeats only once it has run for the timeout itself: after an outage
 * of every API, the nodes get that long to heartbeat again before anything is lost.
 */
import type { Transport } from "@connectrpc/connect";
import type { APIContext } from "../context.js";
import { listNodes, markNodeUnhealthy, type NodeRow, nodeAllocations } from "../db/nodes.js";
import { NodeClient } from "../orchestrator/node-client.js";
import { NodeWatcher } from "../orchestrator/node-watcher.js";
import { markKilled } from "../sandbox/lifecycle.js";
import { judgeLost, LOST_STATES } from "../sandbox/reconcile.js";
import type { NodeInfo } from "./info.js";

export const REFRESH_MS = 1_000;

export interface NodeRegistryOptions {
  /** Watch every node's events (false: tests of the app alone). */
  watch: boolean;
  /** The clock (tests). */
  now?: () => number;
  /** The transport to a registered node instead of its rpcURL (tests: in-memory fakes). */
  transport?: (nodeID: string, rpcURL: string) => Transport | undefined;
}

export class NodeRegistry {
  private readonly watchers = new Map<string, NodeWatcher>();
  private timer: NodeJS.Timeout | undefined;
  private chain: Promise<void> = Promise.resolve();
  /** Watchers of gone nodes still stopping (close waits for them). */
  private readonly stopping = new Set<Promise<void>>();
  private queued = 0;
  private readonly startedAt: number;
  private closed = false;
  private loggedFailure = false;

  constructor(
    private readonly ctx: APIContext,
    /** The same map as ctx.nodes, which this registry alone changes. */
    private readonly nodes: Map<string, NodeClient>,
    private readonly options: NodeRegistryOptions,
  ) {
    this.startedAt = this.now();
  }

  /** Reads the table once, then keeps reading it every REFRESH_MS. */
  async start(): Promise<void> {
    if (this.options.watch) for (const node of this.nodes.values()) this.watch(node);
    await this.refresh();
    // A slow database never piles reads up: the timer skips while one is under way.
    this.timer = setInterval(() => {
      if (this.queued === 0) void this.refresh();
    }, REFRESH_MS);
    this.timer.unref();
  }

  /**
   * One read of the table and the records, begun after the ones asked for before it (one at a
   * time: what a caller wrote before asking is seen). Tests call it directly.
   */
  refresh(): Promise<void> {
    this.queued++;
    this.chain = this.chain
      .then(() => this.refreshOnce())
      .then(
        () => {
          if (this.loggedFailure) this.ctx.logger.info("reading the nodes works again");
          this.loggedFailure = false;
        },
        (err: unknown) => {
          if (!this.loggedFailure && !this.closed) this.ctx.logger.warn({ err }, "could not read the nodes");
          this.loggedFailure = true;
        },
      )
      .finally(() => {
        this.queued--;
      });
    return this.chain;
  }

  async close(): Promise<void> {
    this.closed = true;
    clearInterval(this.timer);
    await this.chain;
    await Promise.all([...this.watchers.values()].map((w) => w.stop()));
    await Promise.all(this.stopping);
    this.watchers.clear();
    for (const node of this.nodes.values()) node.close();
  }

  private now(): number {
    return this.options.now?.() ?? Date.now();
  }

  private async refreshOnce(): Promise<void> {
    if (this.closed) return;
    const { ctx } = this;
    const timeoutMs = ctx.config.nodeHeartbeatTimeoutMs;
    const judging = this.now() - this.startedAt >= timeoutMs;
    const [{ rows, now }, allocations] = await Promise.all([listNodes(ctx.db), nodeAllocations(ctx.db)]);
    const unhealthy: string[] = [];
    for (const row of rows) {
      if (this.closed) return;
      // Old: no creates go there. Stale: old, and judged so (its sandboxes are lost).
      const old = now.getTime() - new Date(row.last_heartbeat).getTime() > timeoutMs;
      const stale = judging && old;
      let node = this.nodes.get(row.id);
      const before = node?.info.status;
      if (!node?.info.static && !old && ctx.config.nodeToken !== undefined) {
        if (!node || node.info.rpcURL !== row.rpc_url) node = await this.register(row, node);
      }
      if (node) {
        node.info = infoOf(row, node.info, old);
        if (!node.info.static || node.proxyURL === undefined) node.proxyURL = row.proxy_url;
      }
      if (stale) {
        unhealthy.push(row.id);
        // One process turns a ready node unhealthy (and says so); all close its records.
        const changed = row.status === "ready" && (await markNodeUnhealthy(ctx.db, row.id, timeoutMs));
        if (changed) {
          ctx.logger.warn(
            { nodeID: row.id, lastHeartbeat: row.last_heartbeat },
            "node missed its heartbeats",
          );
        }
      }
      if (old && node && !node.info.static) {
        // No watcher keeps calling a node that is gone; a new one reconciles when it is back.
        const watcher = this.watchers.get(row.id);
        this.watchers.delete(row.id);
        // Not waited for here (a reconcile against a gone node takes its calls' deadlines).
        if (watcher) {
          const stopped: Promise<void> = watcher.stop().finally(() => this.stopping.delete(stopped));
          this.stopping.add(stopped);
        }
      } else if (!old && node && this.options.watch && !this.watchers.has(row.id)) {
        if (before === "unhealthy") ctx.logger.info({ nodeID: row.id }, "node is back; reconciling");
        this.watch(node);
      }
    }
    // Every round: a record may reach a lost state later (a failed pause settles back to running).
    if (unhealthy.length > 0) await this.reportLost(unhealthy);
    const allocatedAt = new Date();
    for (const node of this.nodes.values()) {
      node.info = {
        ...node.info,
        allocated: allocations.get(node.id) ?? { cpus: 0, memoryMB: 0, sandboxes: 0 },
        allocatedAt,
      };
    }
  }

  /** A client for a registered node (replacing `previous`, at an address the node left). */
  private async register(row: NodeRow, previous: NodeClient | undefined): Promise<NodeClient> {
    const { ctx } = this;
    if (previous) {
      await this.watchers.get(row.id)?.stop();
      this.watchers.delete(row.id);
      previous.close();
    }
    const transport = this.options.transport?.(row.id, row.rpc_url);
    const node = new NodeClient(
      transport ? { id: row.id, transport } : { id: row.id, url: row.rpc_url, token: ctx.config.nodeToken },
      infoOf(row, undefined, false),
    );
    this.nodes.set(row.id, node);
    ctx.logger.info({ nodeID: row.id, rpcURL: row.rpc_url, labels: row.labels }, "node registered");
    return node;
  }

  private watch(node: NodeClient): void {
    const watcher = new NodeWatcher(this.ctx, node);
    this.watchers.set(node.id, watcher);
    watcher.start();
  }

  /** Records the sandboxes of unhealthy nodes as lost (paused ones stay paused). */
  private async reportLost(nodeIDs: readonly string[]): Promise<void> {
    const { ctx } = this;
    const rows = await ctx.db
      .selectFrom("sandboxes")
      .select(["sandbox_id", "node_id"])
      .where("node_id", "in", nodeIDs)
      .where("state", "in", LOST_STATES)
      .execute();
    for (const row of rows) {
      if (this.closed) return;
      const verdict = judgeLost(row.node_id, new Date());
      if (await markKilled(ctx, row.sandbox_id, verdict.reason, verdict.at, verdict.from)) {
        ctx.logger.warn({ nodeID: row.node_id, sandboxID: row.sandbox_id }, "sandbox lost with its node");
      }
    }
  }
}

/** A node's info from its row: its heartbeat's word, and unhealthy when that is too old. */
function infoOf(row: NodeRow, previous: NodeInfo | undefined, stale: boolean): NodeInfo {
  return {
    status: stale ? "unhealthy" : row.status === "unhealthy" ? "ready" : row.status,
    static: previous?.static ?? false,
    rpcURL: previous?.static ? previous.rpcURL : row.rpc_url,
    proxyURL: row.proxy_url,
    version: row.version,
    runtime: row.runtime,
    labels: row.labels,
    capacity: row.capacity,
    load: row.load,
    builds: new Set(row.builds),
    lastHeartbeat: new Date(row.last_heartbeat),
    allocated: previous?.allocated ?? { cpus: 0, memoryMB: 0, sandboxes: 0 },
    allocatedAt: previous?.allocatedAt,
  };
}
