/**
 * Keeps the records in step with a node. The node kills sandboxes on its own (end time reached,
 * runtime died) and says so on its WatchEvents stream; the watcher closes their records. When the
 * stream breaks it reconnects with backoff, and after every (re)connect, and every
 * RECONCILE_INTERVAL_MS, it reconciles: records the node no longer has are closed (their events
 * were missed), records of creates that can no longer finish are closed, and sandboxes the node
 * has whose record is closed are killed (nobody can reach them any more; e.g. their create was
 * abandoned). Sandboxes the API never recorded are left alone: something else started them on
 * the node (tests, benchmarks of the bare node).
 */
import { timestampDate } from "@bufbuild/protobuf/wkt";
import { type SandboxEvent, SandboxEventType } from "@moat/shared/gen/orchestrator";
import type { APIContext } from "../context.js";
import { getSandbox, listNodeSandboxes } from "../db/sandboxes.js";
import { markKilled } from "../sandbox/lifecycle.js";
import type { NodeClient } from "./node-client.js";

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

export class NodeWatcher {
  private readonly abort = new AbortController();
  private running: Promise<void> | undefined;
  private reconcileTimer: NodeJS.Timeout | undefined;
  /** Resolves once the first reconcile after a (re)connect finished; tests wait on it. */
  private reconciled: Promise<void> = Promise.resolve();

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
    for (const row of await listNodeSandboxes(ctx.db, node.id, ["starting", "running", "killing"])) {
      if (row.state === "starting") {
        // A create that outlived any RPC deadline: the API that ran it is gone.
        if (row.created_at < staleCreates) {
          await markKilled(ctx, row.sandbox_id, "create did not finish", new Date(), ["starting"]);
        }
        continue;
      }
      if (onNode.has(row.sandbox_id)) continue;
      // Re-check on the node itself: the sandbox may have been created since the list.
      const present = await node.get(row.sandbox_id).then(
        () => true,
        () => false,
      );
      if (!present) await markKilled(ctx, row.sandbox_id, "missing on node", new Date(), [row.state]);
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
    const reason = STOP_REASONS[event.type];
    if (!reason) return;
    const at = event.time ? timestampDate(event.time) : new Date();
    try {
      await markKilled(this.ctx, event.sandboxId, event.reason ? `${reason}: ${event.reason}` : reason, at);
    } catch (err) {
      this.ctx.logger.error({ err, sandboxID: event.sandboxId }, "could not record a node event");
    }
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
