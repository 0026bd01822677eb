/**
 * Keeps the records in step with a node. The node kills sandboxes on its own (end time reached,
 * runtime died) and pauses those created with autoPause at their end time, and says so on its
 * WatchEvents stream; the watcher closes their records, or records them paused. When the
 * stream breaks it reconnects with backoff, and after every (re)connect, and every
 * RECONCILE_INTERVAL_MS, it reconciles: records the node no longer has are closed (their events
 * were missed), records of creates that can no longer finish are closed, records take the node's
 * word on running or paused (paused sandboxes survive node restarts and stay paused), and
 * sandboxes the node has whose record is closed are killed (nobody can reach them any more; e.g.
 * their create was abandoned). Sandboxes the API never recorded are left alone: something else
 * started them on the node (tests, benchmarks of the bare node).
 *
 * Pauses and resumes in flight in this process record their own outcome: the watcher leaves
 * their records alone.
 */
import { timestampDate } from "@bufbuild/protobuf/wkt";
import { type SandboxEvent, SandboxEventType, type SandboxInfo } from "@moat/shared/gen/orchestrator";
import { ownsDatabase } from "../config.js";
import type { APIContext } from "../context.js";
import { getSandbox, listNodeSandboxes } from "../db/sandboxes.js";
import { markKilled } from "../sandbox/lifecycle.js";
import { applyNodeState } from "../sandbox/node-state.js";
import { LIVE_STATES } from "../sandbox/states.js";
import { type NodeClient, NodeSandboxNotFoundError } from "./node-client.js";

const RECONNECT_MIN_MS = 200;
const RECONNECT_MAX_MS = 5_000;
const RECONCILE_INTERVAL_MS = 60_000;
/** A record still "starting" after this long belongs to a create that will never finish. */
const STALE_CREATE_MS = 5 * 60_000;

const STOP_REASONS: Partial<Record<SandboxEventType, string>> = {
  [SandboxEventType.KILLED]: "killed",
  [SandboxEventType.EXPIRED]: "timeout",
  [SandboxEventType.FAILED]: "failed",
};

/** The rows a node's stop event closes: live ones, but those an API kill is closing. */
const WATCHED_STATES = LIVE_STATES.filter((state) => state !== "killing");

export class NodeWatcher {
  private readonly abort = new AbortController();
  private running: Promise<void> | undefined;
  private reconcileTimer: NodeJS.Timeout | undefined;
  /** Resolves once the first reconcile after a (re)connect finished; tests wait on it. */
  private reconciled: Promise<void> = Promise.resolve();
  /** When this process started watching: records from before belong to earlier processes. */
  private readonly since = new Date();

  constructor(
    private readonly ctx: APIContext,
    private readonly node: NodeClient,
  ) {}

  start(): void {
    if (this.running) return;
    this.running = this.loop();
    this.reconcileTimer = setInterval(() => void this.reconcileLogged(), RECONCILE_INTERVAL_MS);
    this.reconcileTimer.unref();
  }

  async stop(): Promise<void> {
    this.abort.abort();
    clearInterval(this.reconcileTimer);
    await this.running;
    await this.reconciled;
  }

  /** Closes records the node no longer has and kills sandboxes whose record is closed. */
  async reconcile(): Promise<void> {
    const { ctx, node } = this;
    const onNode = new Map((await node.list()).map((s) => [s.config?.sandboxId ?? "", s]));
    const staleCreates = new Date(Date.now() - STALE_CREATE_MS);
    const exclusive = ownsDatabase(ctx.config.database);
    for (const row of await listNodeSandboxes(ctx.db, node.id, LIVE_STATES)) {
      if (row.state === "starting") {
        // A create that outlived any RPC deadline, or one an earlier process of an embedded
        // database recorded: the API that ran it is gone (a sandbox it left is killed below).
        if (row.created_at < staleCreates || (exclusive && row.created_at < this.since)) {
          await markKilled(ctx, row.sandbox_id, "create did not finish", new Date(), ["starting"]);
        }
        continue;
      }
      if (ctx.transitions.get(row.sandbox_id)) continue;
      // Re-check on the node itself: the sandbox may have been created since the list.
      const info =
        onNode.get(row.sandbox_id) ??
        (await node.get(row.sandbox_id).then(
          (s) => s,
          () => undefined,
        ));
      if (!info) {
        await markKilled(ctx, row.sandbox_id, "missing on node", new Date(), [row.state]);
      } else if (row.state !== "killing") {
        // Paused or resumed while the events were missed, or a pause or resume of an API process
        // that died before it recorded the outcome.
        await applyNodeState(ctx, row, info);
      }
    }
    for (const sandboxID of onNode.keys()) {
      if (!sandboxID) continue;
      const row = await getSandbox(ctx.db, sandboxID);
      if (row?.state !== "killed") continue;
      ctx.logger.warn({ sandboxID, nodeID: node.id }, "killing a sandbox whose record is closed");
      await node
        .delete(sandboxID)
        .catch((err: unknown) =>
          ctx.logger.warn({ err, sandboxID, nodeID: node.id }, "could not kill an orphaned sandbox"),
        );
    }
  }

  private async loop(): Promise<void> {
    const { signal } = this.abort;
    let delay = RECONNECT_MIN_MS;
    while (!signal.aborted) {
      try {
        const events = this.node.events(signal);
        // The subscription starts with the first read, just below, alongside this reconcile: what
        // changes after the node's list arrives as events (and the periodic reconcile covers
        // the short moment before the subscription is in place).
        this.reconciled = this.reconcileLogged();
        for await (const event of events) {
          delay = RECONNECT_MIN_MS;
          await this.apply(event);
        }
        if (signal.aborted) return;
        this.ctx.logger.warn({ nodeID: this.node.id }, "node event stream ended; reconnecting");
      } catch (err) {
        if (signal.aborted) return;
        this.ctx.logger.warn({ err, nodeID: this.node.id, retryMs: delay }, "node event stream failed");
      }
      await sleep(delay, signal);
      delay = Math.min(delay * 2, RECONNECT_MAX_MS);
    }
  }

  private async apply(event: SandboxEvent): Promise<void> {
    try {
      if (event.type === SandboxEventType.PAUSED || event.type === SandboxEventType.RESUMED) {
        await this.applyTransition(event);
        return;
      }
      const reason = STOP_REASONS[event.type];
      if (!reason) return;
      const at = event.time ? timestampDate(event.time) : new Date();
      // A row in "killing" is an API kill in flight: it closes the row with its own reason (a
      // retention sweep's, say) once the node answers; if its process died, the reconcile does.
      await markKilled(
        this.ctx,
        event.sandboxId,
        event.reason ? `${reason}: ${event.reason}` : reason,
        at,
        WATCHED_STATES,
      );
    } catch (err) {
      this.ctx.logger.error({ err, sandboxID: event.sandboxId }, "could not record a node event");
    }
  }

  /**
   * A pause (auto-pause at the end time, or another API process) or a resume (another API
   * process) on the node. The record takes the node's current word (Get) rather than the event's:
   * an event read late must not undo a later transition, and a resume's new host address is only
   * in the sandbox's info.
   */
  private async applyTransition(event: SandboxEvent): Promise<void> {
    const { ctx, node } = this;
    if (ctx.transitions.get(event.sandboxId)) return;
    const row = await getSandbox(ctx.db, event.sandboxId);
    if (!row || row.node_id !== node.id) return;
    const recorded = event.type === SandboxEventType.PAUSED ? "paused" : "running";
    if (row.state === recorded || !LIVE_STATES.includes(row.state) || row.state === "killing") return;
    let info: SandboxInfo;
    try {
      info = await node.get(event.sandboxId);
    } catch (err) {
      // Gone since (its KILLED event follows), or the node is unreachable (the reconcile follows).
      if (err instanceof NodeSandboxNotFoundError) return;
      throw err;
    }
    await applyNodeState(ctx, row, info);
  }

  private async reconcileLogged(): Promise<void> {
    if (this.abort.signal.aborted) return;
    try {
      await this.reconcile();
    } catch (err) {
      if (!this.abort.signal.aborted) {
        this.ctx.logger.warn({ err, nodeID: this.node.id }, "reconcile with node failed");
      }
    }
  }
}

function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const timer = setTimeout(done, ms);
    signal.addEventListener("abort", done, { once: true });
    function done() {
      clearTimeout(timer);
      signal.removeEventListener("abort", done);
      resolve();
    }
  });
}
