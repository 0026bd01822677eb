/**
 * Keeps the records in step with a node: the transport that feeds the reconcile rules
 * (sandbox/reconcile.ts) and carries out what they answer. It follows the node's WatchEvents
 * stream, reconnecting with backoff when it breaks, and after every (re)connect, and every
 * RECONCILE_INTERVAL_MS, it reconciles the node's records with the node's list.
 */
import type { SandboxEvent, SandboxInfo } from "@moat/shared/gen/orchestrator";
import { ownsDatabase } from "../config.js";
import type { APIContext } from "../context.js";
import { getSandbox, listNodeSandboxes, updateSandbox } from "../db/sandboxes.js";
import { markKilled, recordStateChange } from "../sandbox/lifecycle.js";
import { applyNodeState } from "../sandbox/node-state.js";
import {
  isOrphan,
  isStrayCopy,
  isSurvivor,
  judgeEvent,
  judgeOnNode,
  judgeRecord,
  pausingNeedsRecord,
  stopEventApplies,
  transitionNeedsNode,
} from "../sandbox/reconcile.js";
import { LIVE_STATES } from "../sandbox/states.js";
import { type NodeClient, NodeSandboxNotFoundError } from "./node-client.js";

const RECONNECT_MIN_MS = 200;
const RECONNECT_MAX_MS = 5_000;
const RECONCILE_INTERVAL_MS = 60_000;

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
    const clock = { now: new Date(), since: this.since, exclusive: ownsDatabase(ctx.config.database) };
    for (const row of await listNodeSandboxes(ctx.db, node.id, LIVE_STATES)) {
      const verdict = judgeRecord(row, clock, ctx.transitions.get(row.sandbox_id) !== undefined);
      if (verdict.action === "close") {
        await markKilled(ctx, row.sandbox_id, verdict.reason, verdict.at, verdict.from);
      }
      if (verdict.action !== "check") continue;
      // Re-check on the node itself: the sandbox may have been created since the list.
      const info =
        onNode.get(row.sandbox_id) ??
        (await node.get(row.sandbox_id).then(
          (s) => s,
          () => undefined,
        ));
      const found = judgeOnNode(row, info, new Date());
      if (found.action === "close") {
        await markKilled(ctx, row.sandbox_id, found.reason, found.at, found.from);
      } else if (found.action === "adopt" && info) {
        await applyNodeState(ctx, row, info);
      }
    }
    for (const sandboxID of onNode.keys()) {
      if (!sandboxID) continue;
      const record = await getSandbox(ctx.db, sandboxID);
      const info = onNode.get(sandboxID);
      if (isSurvivor(record, node.id, info, new Date())) {
        // Recorded lost while its node was silent, yet alive: it runs again (a user's kill since
        // then would have left another reason).
        const revived = await updateSandbox(ctx.db, sandboxID, ["killed"], {
          state: "running",
          stop_reason: null,
          stopped_at: null,
          host_address: info!.hostAddress,
        });
        if (revived) {
          ctx.logger.info(
            { sandboxID, nodeID: node.id },
            "a sandbox recorded lost survived its node: running again",
          );
          await recordStateChange(ctx, "killed", revived);
          continue;
        }
      }
      if (isStrayCopy(record, node.id, ctx.transitions.get(sandboxID) !== undefined)) {
        ctx.logger.warn(
          { sandboxID, nodeID: node.id, recordNodeID: record?.node_id },
          "dropping a copy of a sandbox that lives on another node",
        );
      } else if (!isOrphan(record)) continue;
      else ctx.logger.warn({ sandboxID, nodeID: node.id }, "killing a sandbox whose record is closed");
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
      const verdict = judgeEvent(event, new Date());
      if (verdict.action === "transition") {
        await this.applyTransition(event.sandboxId, verdict.recorded);
      } else if (verdict.action === "pausing") {
        await this.applyPausing(event.sandboxId);
      } else if (verdict.action === "close") {
        const row = await getSandbox(this.ctx.db, event.sandboxId);
        if (!stopEventApplies(row, this.node.id)) return;
        // A sandbox the node stopped while it was being created: the create tries another node.
        if (this.ctx.creates.takeStop(row, this.node.id, verdict.reason, this.ctx.instanceID)) return;
        await markKilled(this.ctx, event.sandboxId, verdict.reason, verdict.at, verdict.from);
      }
    } catch (err) {
      this.ctx.logger.error({ err, sandboxID: event.sandboxId }, "could not record a node event");
    }
  }

  /** A pause or resume on the node: the record takes the node's current word (Get). */
  private async applyTransition(sandboxID: string, recorded: "paused" | "running"): Promise<void> {
    const { ctx, node } = this;
    const inTransition = ctx.transitions.get(sandboxID) !== undefined;
    // A transition in flight here records its own outcome: its row need not even be read.
    const row = inTransition ? undefined : await getSandbox(ctx.db, sandboxID);
    if (!transitionNeedsNode(row, node.id, recorded, inTransition)) return;
    let info: SandboxInfo;
    try {
      info = await node.get(sandboxID);
    } catch (err) {
      // Gone since (its KILLED event follows), or the node is unreachable (the reconcile follows).
      if (err instanceof NodeSandboxNotFoundError) return;
      throw err;
    }
    await applyNodeState(ctx, row, info);
  }

  /**
   * A pause the node began on its own (auto-pause): the record and the routing catalog say
   * pausing at once, so that requests wait for the outcome instead of meeting a sandbox that
   * stopped taking connections.
   */
  private async applyPausing(sandboxID: string): Promise<void> {
    const { ctx, node } = this;
    const inTransition = ctx.transitions.get(sandboxID) !== undefined;
    const row = inTransition ? undefined : await getSandbox(ctx.db, sandboxID);
    if (!pausingNeedsRecord(row, node.id, inTransition)) return;
    const pausing = await updateSandbox(ctx.db, sandboxID, ["running"], { state: "pausing" });
    if (pausing) await recordStateChange(ctx, row.state, pausing);
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
