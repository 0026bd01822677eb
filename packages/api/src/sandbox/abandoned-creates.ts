/**
 * Creates whose API process died. Each API process on a shared PostgreSQL heartbeats its row in
 * `api_instances` every HEARTBEAT_MS and records its id with the creates it runs; every process
 * closes the `starting` records of processes whose heartbeat is older than ABANDONED_AFTER_MS
 * (recorded killed, conditionally: one process does it) and kills what the node made of them. An
 * embedded database needs none of this: its only process closes them at start (reconcile.ts).
 * Pauses and resumes a dead process left between states are settled by the node reconcile, which
 * takes the node's word for them.
 */
import { sql } from "kysely";
import type { APIContext } from "../context.js";
import { beatAPIInstance, removeAPIInstance } from "../db/nodes.js";
import { NodeSandboxNotFoundError } from "../orchestrator/node-client.js";
import { markKilled } from "./lifecycle.js";

export const HEARTBEAT_MS = 5_000;
export const ABANDONED_AFTER_MS = 15_000;
/** Rows of processes gone this long are removed. */
const FORGET_AFTER_MS = 24 * 3600_000;

export class APIInstance {
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<void> | undefined;
  private failing = false;

  constructor(
    private readonly ctx: APIContext,
    private readonly abandonedAfterMs = ABANDONED_AFTER_MS,
  ) {}

  async start(): Promise<void> {
    await beatAPIInstance(this.ctx.db, this.ctx.instanceID);
    this.timer = setInterval(() => void this.tick(), HEARTBEAT_MS);
    this.timer.unref();
  }

  /** One heartbeat and one sweep (tests call it directly). */
  tick(): Promise<void> {
    this.running ??= (async () => {
      try {
        await beatAPIInstance(this.ctx.db, this.ctx.instanceID);
        await sweepAbandonedCreates(this.ctx, this.abandonedAfterMs);
        if (this.failing) this.ctx.logger.info("API heartbeat works again");
        this.failing = false;
      } catch (err) {
        if (!this.failing) this.ctx.logger.warn({ err }, "API heartbeat or abandoned-create sweep failed");
        this.failing = true;
      } finally {
        this.running = undefined;
      }
    })();
    return this.running;
  }

  /** Stops heartbeating and removes this process's row (its creates are over by now). */
  async stop(): Promise<void> {
    clearInterval(this.timer);
    await this.running;
    await removeAPIInstance(this.ctx.db, this.ctx.instanceID);
  }
}

/**
 * Closes the starting records of API processes that stopped heartbeating, and kills their
 * sandboxes on their nodes. Answers the ids closed.
 */
export async function sweepAbandonedCreates(ctx: APIContext, abandonedAfterMs: number): Promise<string[]> {
  const cutoff = sql<Date>`now() - make_interval(secs => ${abandonedAfterMs / 1000})`;
  const rows = await ctx.db
    .selectFrom("sandboxes")
    .select(["sandbox_id", "node_id", "api_instance_id"])
    .where("state", "=", "starting")
    .where("api_instance_id", "is not", null)
    .where("api_instance_id", "!=", ctx.instanceID)
    .where(({ not, exists, selectFrom }) =>
      not(
        exists(
          selectFrom("api_instances")
            .select("id")
            .whereRef("api_instances.id", "=", "sandboxes.api_instance_id")
            .where("heartbeat_at", ">=", cutoff),
        ),
      ),
    )
    .execute();
  const closed: string[] = [];
  for (const row of rows) {
    const killed = await markKilled(
      ctx,
      row.sandbox_id,
      "create did not finish: its API process stopped",
      new Date(),
      ["starting"],
    );
    if (!killed) continue;
    closed.push(row.sandbox_id);
    const node = ctx.nodes.get(row.node_id);
    await node?.delete(row.sandbox_id).catch((err: unknown) => {
      if (err instanceof NodeSandboxNotFoundError) return;
      // The node reconcile kills it later (its record is closed).
      ctx.logger.warn(
        { err, sandboxID: row.sandbox_id, nodeID: row.node_id },
        "could not kill an abandoned create",
      );
    });
  }
  await ctx.db
    .deleteFrom("api_instances")
    .where("heartbeat_at", "<", sql<Date>`now() - make_interval(secs => ${FORGET_AFTER_MS / 1000})`)
    .execute();
  return closed;
}
