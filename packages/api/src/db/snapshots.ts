/**
 * Typed queries on snapshots: templates marked `snapshot`, each build one snapshot of a sandbox
 * (template_builds.source_sandbox_id). Every query is scoped by the team.
 */
import { sql } from "kysely";
import type { DB } from "./database.js";
import type { TemplateBuildRow, TemplateRow } from "./schema.js";
import { assignTags } from "./template-tags.js";

/** Snapshot builds a team holds on its nodes, being taken or ready (retired ones are gone). */
export async function countTeamSnapshots(db: DB, teamID: string): Promise<number> {
  const row = await db
    .selectFrom("template_builds as b")
    .innerJoin("templates as t", "t.template_id", "b.template_id")
    .select(sql<number>`cast(count(*) as integer)`.as("count"))
    .where("t.team_id", "=", teamID)
    .where("t.snapshot", "=", true)
    .where("b.status", "in", ["waiting", "ready"])
    .where("b.retired_at", "is", null)
    .executeTakeFirstOrThrow();
  return row.count;
}

export interface NewSnapshot {
  /** Used when the team has no snapshot of that name yet (an unnamed one is named by it). */
  templateID: string;
  teamID: string;
  name: string;
  buildID: string;
  sourceSandboxID: string;
  nodeID: string;
  cpuCount: number;
  memoryMB: number;
  diskSizeMB: number;
  /** Tags other than `default` the snapshot gets. */
  tags: readonly string[];
}

/**
 * The team's snapshot template of that name (made now when there is none) with a new build in
 * `waiting` for the snapshot being taken; undefined when the name is a built template's.
 */
export async function reserveSnapshot(db: DB, s: NewSnapshot): Promise<TemplateRow | undefined> {
  const template = await db
    .insertInto("templates")
    .values({
      template_id: s.templateID,
      team_id: s.teamID,
      name: s.name,
      snapshot: true,
      cpu_count: s.cpuCount,
      memory_mb: s.memoryMB,
      disk_size_mb: s.diskSizeMB,
      build_count: 1,
      // Milliseconds, as the list cursor holds them (now() would add microseconds).
      created_at: new Date(),
    })
    .onConflict((oc) =>
      oc
        .columns(["team_id", "name"])
        .doUpdateSet({
          cpu_count: s.cpuCount,
          memory_mb: s.memoryMB,
          disk_size_mb: s.diskSizeMB,
          build_count: sql`templates.build_count + 1`,
          updated_at: sql`now()`,
        })
        .where("templates.snapshot", "=", true),
    )
    .returningAll()
    .executeTakeFirst();
  if (!template) return undefined;
  await db
    .insertInto("template_builds")
    .values({
      build_id: s.buildID,
      template_id: template.template_id,
      status: "waiting",
      cpu_count: s.cpuCount,
      memory_mb: s.memoryMB,
      disk_size_mb: s.diskSizeMB,
      node_id: s.nodeID,
      source_sandbox_id: s.sourceSandboxID,
      created_at: new Date(),
    })
    .execute();
  await assignTags(db, template.template_id, s.buildID, s.tags);
  return template;
}

/** waiting → ready, once the node has the snapshot. */
export async function markSnapshotReady(
  db: DB,
  buildID: string,
  envdVersion: string | null,
): Promise<boolean> {
  const now = new Date();
  const row = await db
    .updateTable("template_builds")
    .set({
      status: "ready",
      envd_version: envdVersion,
      started_at: now,
      finished_at: now,
      updated_at: now,
    })
    .where("build_id", "=", buildID)
    .where("status", "=", "waiting")
    .returning("build_id")
    .executeTakeFirst();
  return row !== undefined;
}

/**
 * Removes a snapshot build that never became ready, and its template when that was its only
 * build (a snapshot name that never held one is not kept).
 */
export async function dropSnapshotBuild(db: DB, templateID: string, buildID: string): Promise<void> {
  await db.transaction().execute(async (tx) => {
    await tx.deleteFrom("template_tags").where("build_id", "=", buildID).execute();
    await tx.deleteFrom("template_builds").where("build_id", "=", buildID).execute();
    await tx
      .deleteFrom("templates")
      .where("template_id", "=", templateID)
      .where("snapshot", "=", true)
      .where((eb) =>
        eb.not(
          eb.exists(
            eb.selectFrom("template_builds").select("build_id").where("template_id", "=", templateID),
          ),
        ),
      )
      .execute();
  });
}

/** Snapshot builds still `waiting` since before `before` (their API process stopped mid-snapshot). */
export async function listUnfinishedSnapshots(
  db: DB,
  before: Date,
): Promise<Array<Pick<TemplateBuildRow, "build_id" | "template_id" | "node_id">>> {
  return db
    .selectFrom("template_builds")
    .select(["build_id", "template_id", "node_id"])
    .where("source_sandbox_id", "is not", null)
    .where("status", "=", "waiting")
    .where("created_at", "<", before)
    .execute();
}

export interface SnapshotFilter {
  teamID: string;
  /** Only snapshots taken from this sandbox. */
  sandboxID?: string;
  /** Only the snapshot of this name or template id. */
  nameOrID?: string;
}

/**
 * One page of a team's snapshots (templates with a ready build), newest first with the id as
 * tie-breaker, each with the tag its latest ready build was last given (undefined: `default`).
 */
export async function listTeamSnapshots(
  db: DB,
  filter: SnapshotFilter,
  page: { limit: number; after?: { time: Date; id: string } },
): Promise<Array<{ template: TemplateRow; tag: string | undefined }>> {
  let query = db
    .selectFrom("templates as t")
    .selectAll("t")
    .where("t.team_id", "=", filter.teamID)
    .where("t.snapshot", "=", true)
    .where((eb) =>
      eb.exists(
        eb
          .selectFrom("template_builds as b")
          .select("b.build_id")
          .whereRef("b.template_id", "=", "t.template_id")
          .where("b.status", "=", "ready")
          .where("b.retired_at", "is", null)
          .$if(filter.sandboxID !== undefined, (q) => q.where("b.source_sandbox_id", "=", filter.sandboxID!)),
      ),
    );
  if (filter.nameOrID !== undefined) {
    const nameOrID = filter.nameOrID;
    query = query.where((eb) => eb.or([eb("t.name", "=", nameOrID), eb("t.template_id", "=", nameOrID)]));
  }
  const { after } = page;
  if (after) {
    query = query.where((eb) =>
      eb(eb.refTuple("t.created_at", "t.template_id"), "<", eb.tuple(after.time, after.id)),
    );
  }
  const templates = await query
    .orderBy("t.created_at", "desc")
    .orderBy("t.template_id", "desc")
    .limit(page.limit)
    .execute();
  if (templates.length === 0) return [];
  // The latest ready build of each, and the tag given to it last.
  const tags = await db
    .selectFrom("template_builds as b")
    .leftJoin("template_tags as tt", "tt.build_id", "b.build_id")
    .select(["b.template_id", "tt.tag"])
    .distinctOn("b.template_id")
    .where(
      "b.template_id",
      "in",
      templates.map((t) => t.template_id),
    )
    .where("b.status", "=", "ready")
    .where("b.retired_at", "is", null)
    .orderBy("b.template_id")
    .orderBy("b.created_at", "desc")
    .orderBy(sql`tt.created_at`, sql`desc nulls last`)
    .execute();
  const tagOf = new Map(tags.map((r) => [r.template_id, r.tag ?? undefined]));
  return templates.map((template) => ({ template, tag: tagOf.get(template.template_id) }));
}
