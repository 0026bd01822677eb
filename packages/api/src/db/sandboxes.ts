/** Typed queries on sandboxes. Every query a team's request leads to is scoped by its team id. */
import { sql } from "kysely";
import type { DB } from "./database.js";
import type { NewSandboxRow, SandboxRow, SandboxRowState } from "./schema.js";

export async function insertSandbox(db: DB, row: NewSandboxRow): Promise<void> {
  await db.insertInto("sandboxes").values(row).execute();
}

export async function getSandbox(db: DB, sandboxID: string): Promise<SandboxRow | undefined> {
  return db.selectFrom("sandboxes").selectAll().where("sandbox_id", "=", sandboxID).executeTakeFirst();
}

/** The team's sandbox in one of `states`; another team's sandbox is as absent as a missing one. */
export async function getTeamSandbox(
  db: DB,
  teamID: string,
  sandboxID: string,
  states: readonly SandboxRowState[],
): Promise<SandboxRow | undefined> {
  return db
    .selectFrom("sandboxes")
    .selectAll()
    .where("sandbox_id", "=", sandboxID)
    .where("team_id", "=", teamID)
    .where("state", "in", states)
    .executeTakeFirst();
}

export type SandboxChanges = Partial<
  Pick<
    SandboxRow,
    | "state"
    | "host_address"
    | "envd_version"
    | "started_at"
    | "end_at"
    | "stopped_at"
    | "stop_reason"
    | "node_id"
    | "artifact_generation"
  >
>;

/**
 * Applies `changes` only while the sandbox is in one of `from` (a compare-and-set), so concurrent
 * requests and node events cannot undo each other's transitions. Answers the updated row. Whoever
 * records a pause records when it began (kept through a failed resume), for the paused retention.
 */
export async function updateSandbox(
  db: DB,
  sandboxID: string,
  from: readonly SandboxRowState[],
  changes: SandboxChanges,
): Promise<SandboxRow | undefined> {
  const pausedAt =
    changes.state === "paused"
      ? { paused_at: sql<Date>`coalesce(paused_at, now())` }
      : changes.state === "running"
        ? { paused_at: null }
        : {};
  return db
    .updateTable("sandboxes")
    .set({ ...changes, ...pausedAt })
    .where("sandbox_id", "=", sandboxID)
    .where("state", "in", from)
    .returningAll()
    .executeTakeFirst();
}

export interface SandboxFilter {
  teamID: string;
  states: readonly SandboxRowState[];
  /** Every pair must be present in the sandbox's metadata. */
  metadata?: Record<string, string>;
  /** Inclusive. */
  startedAfter?: Date;
  /** A template id or alias. */
  template?: string;
}

export interface SandboxPage {
  order: "asc" | "desc";
  limit: number;
  /** Position after which the page starts: the last row of the previous page. */
  after?: { startedAt: Date; sandboxID: string };
}

function filtered(db: DB, filter: SandboxFilter) {
  let query = db
    .selectFrom("sandboxes")
    .where("team_id", "=", filter.teamID)
    .where("state", "in", filter.states);
  if (filter.metadata && Object.keys(filter.metadata).length > 0) {
    query = query.where(sql<boolean>`metadata @> cast(${JSON.stringify(filter.metadata)} as jsonb)`);
  }
  if (filter.startedAfter) query = query.where("started_at", ">=", filter.startedAfter);
  if (filter.template !== undefined) {
    const template = filter.template;
    query = query.where((eb) => eb.or([eb("template_id", "=", template), eb("alias", "=", template)]));
  }
  return query;
}

/** One page of a team's sandboxes, ordered by start time with the id as tie-breaker. */
export async function listSandboxes(db: DB, filter: SandboxFilter, page: SandboxPage): Promise<SandboxRow[]> {
  let query = filtered(db, filter).selectAll();
  const { after } = page;
  if (after) {
    const op = page.order === "desc" ? "<" : ">";
    query = query.where((eb) =>
      eb(eb.refTuple("started_at", "sandbox_id"), op, eb.tuple(after.startedAt, after.sandboxID)),
    );
  }
  return query
    .orderBy("started_at", page.order)
    .orderBy("sandbox_id", page.order)
    .limit(page.limit)
    .execute();
}

export async function countSandboxes(db: DB, filter: SandboxFilter): Promise<number> {
  const row = await filtered(db, filter)
    .select(sql<number>`cast(count(*) as integer)`.as("count"))
    .executeTakeFirstOrThrow();
  return row.count;
}

/** A node's sandboxes in `states` (reconcile after the event stream reconnects). */
export async function listNodeSandboxes(
  db: DB,
  nodeID: string,
  states: readonly SandboxRowState[],
): Promise<SandboxRow[]> {
  return db
    .selectFrom("sandboxes")
    .selectAll()
    .where("node_id", "=", nodeID)
    .where("state", "in", states)
    .execute();
}

/** The ids and envd access tokens of secured sandboxes in `states` (the signed-URL routing). */
export async function listAccessTokens(
  db: DB,
  states: readonly SandboxRowState[],
): Promise<{ sandbox_id: string; envd_access_token: string }[]> {
  const rows = await db
    .selectFrom("sandboxes")
    .select(["sandbox_id", "envd_access_token"])
    .where("state", "in", states)
    .where("envd_access_token", "is not", null)
    .execute();
  return rows.flatMap((r) => (r.envd_access_token ? [{ ...r, envd_access_token: r.envd_access_token }] : []));
}

export async function countByState(db: DB): Promise<Map<SandboxRowState, number>> {
  const rows = await db
    .selectFrom("sandboxes")
    .select(["state", sql<number>`cast(count(*) as integer)`.as("count")])
    .where("state", "!=", "killed")
    .groupBy("state")
    .execute();
  return new Map(rows.map((r) => [r.state, r.count]));
}

/** Sandboxes of any team started from a template, in `states` (a template in use stays). */
export async function countTemplateSandboxes(
  db: DB,
  templateID: string,
  states: readonly SandboxRowState[],
): Promise<number> {
  const row = await db
    .selectFrom("sandboxes")
    .select(sql<number>`cast(count(*) as integer)`.as("count"))
    .where("template_id", "=", templateID)
    .where("state", "in", states)
    .executeTakeFirstOrThrow();
  return row.count;
}

/** Every sandbox in `states` (the full resync of the routing catalog in Redis). */
export async function listSandboxesInStates(
  db: DB,
  states: readonly SandboxRowState[],
): Promise<SandboxRow[]> {
  return db.selectFrom("sandboxes").selectAll().where("state", "in", states).execute();
}
