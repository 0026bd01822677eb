/**
 * Typed queries on template builds and their logs. Status changes are compare-and-sets on the
 * status (and, for a start, on started_at), so two API processes cannot both start a build, and a
 * runner's late write cannot undo a deletion or an "interrupted".
 */
import { sql } from "kysely";
import type { DB } from "./database.js";
import type {
  BuildReason,
  StoredBuildStart,
  TemplateBuildLogRow,
  TemplateBuildLogsTable,
  TemplateBuildRow,
  TemplateBuildStatus,
} from "./schema.js";

export async function insertBuild(
  db: DB,
  build: { buildID: string; templateID: string; cpuCount: number; memoryMB: number; diskSizeMB: number },
): Promise<TemplateBuildRow> {
  return db
    .insertInto("template_builds")
    .values({
      build_id: build.buildID,
      template_id: build.templateID,
      status: "waiting",
      cpu_count: build.cpuCount,
      memory_mb: build.memoryMB,
      disk_size_mb: build.diskSizeMB,
      // Milliseconds, as the list cursor holds them (now() would add microseconds).
      created_at: new Date(),
    })
    .returningAll()
    .executeTakeFirstOrThrow();
}

/** The template's build; undefined for another template's. */
export async function getBuild(
  db: DB,
  templateID: string,
  buildID: string,
): Promise<TemplateBuildRow | undefined> {
  return db
    .selectFrom("template_builds")
    .selectAll()
    .where("build_id", "=", buildID)
    .where("template_id", "=", templateID)
    .executeTakeFirst();
}

/** Builds requested and never started, ended by a newer request for the same template. */
export async function supersedeUnstartedBuilds(db: DB, templateID: string, byBuildID: string): Promise<void> {
  const reason: BuildReason = { message: `superseded by build ${byBuildID} before it was started` };
  await db
    .updateTable("template_builds")
    .set({ status: "error", reason: JSON.stringify(reason), finished_at: new Date(), updated_at: new Date() })
    .where("template_id", "=", templateID)
    .where("status", "=", "waiting")
    .where("started_at", "is", null)
    .execute();
}

/** waiting (never started) → building; undefined when it was started (or ended) already. */
export async function claimBuild(
  db: DB,
  buildID: string,
  start: StoredBuildStart,
  nodeID: string,
): Promise<TemplateBuildRow | undefined> {
  const now = new Date();
  return db
    .updateTable("template_builds")
    .set({
      status: "building",
      start_request: JSON.stringify(start),
      node_id: nodeID,
      started_at: now,
      heartbeat_at: now,
      updated_at: now,
    })
    .where("build_id", "=", buildID)
    .where("status", "=", "waiting")
    .where("started_at", "is", null)
    .returningAll()
    .executeTakeFirst();
}

export async function setBuildNode(db: DB, buildID: string, nodeID: string): Promise<void> {
  await db
    .updateTable("template_builds")
    .set({ node_id: nodeID, updated_at: new Date() })
    .where("build_id", "=", buildID)
    .where("status", "=", "building")
    .execute();
}

export type FinishedBuild =
  | {
      status: "ready";
      envdVersion: string;
      defaultUser: string;
      defaultWorkdir: string;
    }
  | { status: "error"; reason: BuildReason };

/** building → ready or error; undefined when it no longer builds (deleted, marked interrupted). */
export async function finishBuild(
  db: DB,
  buildID: string,
  outcome: FinishedBuild,
): Promise<TemplateBuildRow | undefined> {
  const now = new Date();
  const changes =
    outcome.status === "ready"
      ? {
          status: outcome.status,
          envd_version: outcome.envdVersion || null,
          default_user: outcome.defaultUser || null,
          default_workdir: outcome.defaultWorkdir || null,
        }
      : { status: outcome.status, reason: JSON.stringify(outcome.reason) };
  return db
    .updateTable("template_builds")
    .set({ ...changes, finished_at: now, updated_at: now })
    .where("build_id", "=", buildID)
    .where("status", "=", "building")
    .returningAll()
    .executeTakeFirst();
}

/** The API process running these builds is alive. */
export async function touchBuilds(db: DB, buildIDs: readonly string[]): Promise<void> {
  if (buildIDs.length === 0) return;
  await db
    .updateTable("template_builds")
    .set({ heartbeat_at: new Date() })
    .where("build_id", "in", buildIDs)
    .where("status", "=", "building")
    .execute();
}

/**
 * Started builds whose heartbeat is older than `staleBefore`: the API process running them is
 * gone (and with it the stream that kept the node building). Marked error; answers their ids.
 */
export async function markStaleBuildsInterrupted(db: DB, staleBefore: Date): Promise<string[]> {
  const reason: BuildReason = {
    message: "the build was interrupted: the API process running it stopped",
  };
  const rows = await db
    .updateTable("template_builds")
    .set({ status: "error", reason: JSON.stringify(reason), finished_at: new Date(), updated_at: new Date() })
    .where("status", "in", ["waiting", "building"])
    .where("started_at", "is not", null)
    .where("heartbeat_at", "<", staleBefore)
    .returning("build_id")
    .execute();
  return rows.map((r) => r.build_id);
}

/** The latest build of each template (by request time), and the latest ready one. */
export async function latestBuilds(
  db: DB,
  templateIDs: readonly string[],
  status?: TemplateBuildStatus,
): Promise<Map<string, TemplateBuildRow>> {
  if (templateIDs.length === 0) return new Map();
  let query = db
    .selectFrom("template_builds")
    .selectAll()
    .distinctOn("template_id")
    .where("template_id", "in", templateIDs);
  if (status) query = query.where("status", "=", status);
  if (status === "ready") query = query.where("retired_at", "is", null);
  const rows = await query.orderBy("template_id").orderBy("created_at", "desc").execute();
  return new Map(rows.map((r) => [r.template_id, r]));
}

export async function latestReadyBuild(db: DB, templateID: string): Promise<TemplateBuildRow | undefined> {
  return (await latestBuilds(db, [templateID], "ready")).get(templateID);
}

/** The ready build the tag was given to last; undefined when the tag names none. */
export async function taggedReadyBuild(
  db: DB,
  templateID: string,
  tag: string,
): Promise<TemplateBuildRow | undefined> {
  return db
    .selectFrom("template_tags")
    .innerJoin("template_builds", "template_builds.build_id", "template_tags.build_id")
    .selectAll("template_builds")
    .where("template_tags.template_id", "=", templateID)
    .where("template_tags.tag", "=", tag)
    .where("template_builds.status", "=", "ready")
    .where("template_builds.retired_at", "is", null)
    .orderBy("template_tags.created_at", "desc")
    .limit(1)
    .executeTakeFirst();
}

export async function listReadyBuilds(db: DB, templateID: string): Promise<TemplateBuildRow[]> {
  return db
    .selectFrom("template_builds")
    .selectAll()
    .where("template_id", "=", templateID)
    .where("status", "=", "ready")
    .where("retired_at", "is", null)
    .execute();
}

/**
 * Ready builds nothing can start from any more: a newer build of the template was ready before
 * `supersededBefore` (so creates that resolved them then have long reached their node), no tag
 * names them (a tag names its newest ready assignment), and no running build stacks on them.
 */
export async function listRetirableBuilds(
  db: DB,
  supersededBefore: Date,
): Promise<Array<Pick<TemplateBuildRow, "build_id" | "template_id" | "node_id" | "source_sandbox_id">>> {
  return db
    .selectFrom("template_builds as b")
    .select(["b.build_id", "b.template_id", "b.node_id", "b.source_sandbox_id"])
    .where("b.status", "=", "ready")
    .where("b.retired_at", "is", null)
    .where((eb) =>
      eb.exists(
        eb
          .selectFrom("template_builds as newer")
          .select("newer.build_id")
          .whereRef("newer.template_id", "=", "b.template_id")
          .where("newer.status", "=", "ready")
          .whereRef("newer.created_at", ">", "b.created_at")
          .where("newer.finished_at", "<=", supersededBefore),
      ),
    )
    .where((eb) =>
      eb.not(
        eb.exists(
          eb
            .selectFrom("template_tags as t")
            .select("t.tag")
            .whereRef("t.build_id", "=", "b.build_id")
            .where((inner) =>
              inner.not(
                inner.exists(
                  inner
                    .selectFrom("template_tags as later")
                    .innerJoin("template_builds as lb", "lb.build_id", "later.build_id")
                    .select("later.tag")
                    .whereRef("later.template_id", "=", "t.template_id")
                    .whereRef("later.tag", "=", "t.tag")
                    .whereRef("later.created_at", ">", "t.created_at")
                    .where("lb.status", "=", "ready"),
                ),
              ),
            ),
        ),
      ),
    )
    .where((eb) =>
      eb.not(
        eb.exists(
          eb
            .selectFrom("template_builds as child")
            .select("child.build_id")
            .where("child.status", "=", "building")
            .where(sql<boolean>`child.start_request->>'fromBuildID' = b.build_id::text`),
        ),
      ),
    )
    .execute();
}

/** Marks a build retired; false when another API process did first. */
export async function markBuildRetired(db: DB, buildID: string): Promise<boolean> {
  const now = new Date();
  const row = await db
    .updateTable("template_builds")
    .set({ retired_at: now, updated_at: now })
    .where("build_id", "=", buildID)
    .where("retired_at", "is", null)
    .returning("build_id")
    .executeTakeFirst();
  return row !== undefined;
}

/** One page of a template's builds, newest first with the id as tie-breaker. */
export async function listBuilds(
  db: DB,
  templateID: string,
  page: { limit: number; after?: { time: Date; id: string } },
): Promise<TemplateBuildRow[]> {
  let query = db.selectFrom("template_builds").selectAll().where("template_id", "=", templateID);
  const { after } = page;
  if (after) {
    query = query.where((eb) =>
      eb(eb.refTuple("created_at", "build_id"), "<", eb.tuple(after.time, after.id)),
    );
  }
  return query.orderBy("created_at", "desc").orderBy("build_id", "desc").limit(page.limit).execute();
}

export interface NewBuildLog {
  buildID: string;
  ordinal: number;
  timestamp: Date;
  level: TemplateBuildLogsTable["level"];
  message: string;
  step: string | null;
}

export async function insertBuildLog(db: DB, log: NewBuildLog): Promise<void> {
  await db
    .insertInto("template_build_logs")
    .values({
      build_id: log.buildID,
      ordinal: log.ordinal,
      timestamp: log.timestamp,
      level: log.level,
      message: log.message,
      step: log.step,
    })
    .execute();
}

/** A build's log in the order the node sent it, at `levels`, from the `offset`-th such entry on. */
export async function listBuildLogs(
  db: DB,
  query: {
    buildID: string;
    levels: readonly TemplateBuildLogsTable["level"][];
    offset: number;
    limit: number;
    step?: string;
  },
): Promise<TemplateBuildLogRow[]> {
  let q = db
    .selectFrom("template_build_logs")
    .selectAll()
    .where("build_id", "=", query.buildID)
    .where("level", "in", query.levels);
  if (query.step !== undefined) q = q.where("step", "=", query.step);
  return q.orderBy("ordinal", "asc").offset(query.offset).limit(query.limit).execute();
}

/**
 * A page of a build's log in time order (`forward`) or newest first (`backward`), from a time and/or
 * past an ordinal (the last entry of the previous page).
 */
export async function pageBuildLogs(
  db: DB,
  query: {
    buildID: string;
    levels: readonly TemplateBuildLogsTable["level"][];
    direction: "forward" | "backward";
    from?: Date;
    afterOrdinal?: number;
    limit: number;
  },
): Promise<TemplateBuildLogRow[]> {
  const forward = query.direction === "forward";
  let q = db
    .selectFrom("template_build_logs")
    .selectAll()
    .where("build_id", "=", query.buildID)
    .where("level", "in", query.levels);
  if (query.from) q = q.where("timestamp", forward ? ">=" : "<=", query.from);
  if (query.afterOrdinal !== undefined) q = q.where("ordinal", forward ? ">" : "<", query.afterOrdinal);
  return q
    .orderBy("ordinal", forward ? "asc" : "desc")
    .limit(query.limit)
    .execute();
}

/** The team's builds that a node runs now (claimed, not finished). */
export async function countRunningBuilds(db: DB, teamID: string): Promise<number> {
  const row = await db
    .selectFrom("template_builds")
    .innerJoin("templates", "templates.template_id", "template_builds.template_id")
    .select(sql<number>`cast(count(*) as integer)`.as("count"))
    .where("templates.team_id", "=", teamID)
    .where("template_builds.status", "=", "building")
    .executeTakeFirstOrThrow();
  return row.count;
}

/** The team's builds that are requested or running (waiting, building). */
export async function listTeamUnfinishedBuilds(db: DB, teamID: string): Promise<string[]> {
  const rows = await db
    .selectFrom("template_builds")
    .innerJoin("templates", "templates.template_id", "template_builds.template_id")
    .select("template_builds.build_id")
    .where("templates.team_id", "=", teamID)
    .where("template_builds.status", "in", ["waiting", "building"])
    .execute();
  return rows.map((r) => r.build_id);
}

/** Ends builds still waiting or building as failed with `message`; answers the ids it ended. */
export async function failUnfinishedBuilds(
  db: DB,
  buildIDs: readonly string[],
  message: string,
): Promise<string[]> {
  if (buildIDs.length === 0) return [];
  const now = new Date();
  const rows = await db
    .updateTable("template_builds")
    .set({ status: "error", reason: JSON.stringify({ message }), finished_at: now, updated_at: now })
    .where("build_id", "in", buildIDs)
    .where("status", "in", ["waiting", "building"])
    .returning("build_id")
    .execute();
  return rows.map((r) => r.build_id);
}
