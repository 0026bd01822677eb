/** Typed queries on registered nodes and on the heartbeats of API processes. */

import type { NodeHeartbeat } from "@moat/shared";
import type { Selectable } from "kysely";
import { sql } from "kysely";
import type { DB } from "./database.js";
import type { NodeStatus, NodesTable } from "./schema.js";

export type NodeRow = Selectable<NodesTable>;

export type { NodeHeartbeat };

/**
 * Records a node's heartbeat (registering it the first time) at the database's clock. A draining
 * node stays draining; any other becomes ready. Answers the row.
 */
export async function recordHeartbeat(db: DB, nodeID: string, beat: NodeHeartbeat): Promise<NodeRow> {
  const values = {
    rpc_url: beat.rpcURL,
    proxy_url: beat.proxyURL,
    version: beat.version,
    runtime: beat.runtime,
    labels: JSON.stringify(beat.labels),
    capacity: JSON.stringify(beat.capacity),
    load: JSON.stringify(beat.load),
    builds: JSON.stringify(beat.builds),
    last_heartbeat: sql<Date>`now()`,
  };
  return db
    .insertInto("nodes")
    .values({ id: nodeID, ...values, status: "ready" })
    .onConflict((oc) =>
      oc.column("id").doUpdateSet({
        ...values,
        status: sql<NodeStatus>`case when nodes.status = 'draining' then 'draining' else 'ready' end`,
      }),
    )
    .returningAll()
    .executeTakeFirstOrThrow();
}

/** Every registered node, and the database's clock to judge their heartbeats by. */
export async function listNodes(db: DB): Promise<{ rows: NodeRow[]; now: Date }> {
  const [rows, clock] = await Promise.all([
    db.selectFrom("nodes").selectAll().orderBy("id").execute(),
    sql<{ now: Date }>`select now() as now`.execute(db),
  ]);
  return { rows, now: new Date(clock.rows[0]!.now) };
}

export async function getNode(db: DB, nodeID: string): Promise<NodeRow | undefined> {
  return db.selectFrom("nodes").selectAll().where("id", "=", nodeID).executeTakeFirst();
}

/** Sets an operator's status (ready or draining); answers the row, undefined when unregistered. */
export async function setNodeStatus(
  db: DB,
  nodeID: string,
  status: "ready" | "draining",
): Promise<NodeRow | undefined> {
  return db.updateTable("nodes").set({ status }).where("id", "=", nodeID).returningAll().executeTakeFirst();
}

/**
 * Marks a ready node unhealthy when its last heartbeat is older than `timeoutMs` by the database's
 * clock; answers whether this call made the change (one API process among several).
 */
export async function markNodeUnhealthy(db: DB, nodeID: string, timeoutMs: number): Promise<boolean> {
  const changed = await db
    .updateTable("nodes")
    .set({ status: "unhealthy" })
    .where("id", "=", nodeID)
    .where("status", "=", "ready")
    .where("last_heartbeat", "<", sql<Date>`now() - make_interval(secs => ${timeoutMs / 1000})`)
    .returning("id")
    .executeTakeFirst();
  return changed !== undefined;
}

/** CPUs, memory and number of the live, not paused sandboxes the records place on each node. */
export async function nodeAllocations(
  db: DB,
): Promise<Map<string, { cpus: number; memoryMB: number; sandboxes: number }>> {
  const rows = await db
    .selectFrom("sandboxes")
    .select((eb) => [
      "node_id",
      eb.fn.sum<string>("cpu_count").as("cpus"),
      eb.fn.sum<string>("memory_mb").as("memory"),
      eb.fn.countAll<string>().as("count"),
    ])
    .where("state", "in", ["starting", "running", "pausing", "resuming"])
    .groupBy("node_id")
    .execute();
  return new Map(
    rows.map((r) => [
      r.node_id,
      { cpus: Number(r.cpus), memoryMB: Number(r.memory), sandboxes: Number(r.count) },
    ]),
  );
}

/** Records that API process `id` is alive (registering it the first time). */
export async function beatAPIInstance(db: DB, id: string): Promise<void> {
  await db
    .insertInto("api_instances")
    .values({ id })
    .onConflict((oc) => oc.column("id").doUpdateSet({ heartbeat_at: sql<Date>`now()` }))
    .execute();
}

export async function removeAPIInstance(db: DB, id: string): Promise<void> {
  await db.deleteFrom("api_instances").where("id", "=", id).execute();
}
