/** Typed queries on templates. A team's requests reach only its own templates and public ones. */
import { sql } from "kysely";
import type { DB } from "./database.js";
import type { TeamRow, TemplateRow } from "./schema.js";

/**
 * The team's template of that name with one more build, made now when there is none. Concurrent
 * requests for a new name end up with the same template.
 */
export async function upsertTemplateForBuild(
  db: DB,
  template: {
    templateID: string;
    teamID: string;
    name: string;
    cpuCount: number;
    memoryMB: number;
    diskSizeMB: number;
  },
): Promise<TemplateRow> {
  return db
    .insertInto("templates")
    .values({
      template_id: template.templateID,
      team_id: template.teamID,
      name: template.name,
      cpu_count: template.cpuCount,
      memory_mb: template.memoryMB,
      disk_size_mb: template.diskSizeMB,
      build_count: 1,
      // Milliseconds, as the list cursor holds them (now() would add microseconds).
      created_at: new Date(),
    })
    .onConflict((oc) =>
      oc.columns(["team_id", "name"]).doUpdateSet({
        build_count: sql`templates.build_count + 1`,
        updated_at: sql`now()`,
      }),
    )
    .returningAll()
    .executeTakeFirstOrThrow();
}

export async function getTemplate(db: DB, templateID: string): Promise<TemplateRow | undefined> {
  return db.selectFrom("templates").selectAll().where("template_id", "=", templateID).executeTakeFirst();
}

export async function getTeamTemplateByName(
  db: DB,
  teamID: string,
  name: string,
): Promise<TemplateRow | undefined> {
  return db
    .selectFrom("templates")
    .selectAll()
    .where("team_id", "=", teamID)
    .where("name", "=", name)
    .executeTakeFirst();
}

/** Every team's template of that name with its team (few: names are unique per team). */
export async function listTemplatesByName(
  db: DB,
  name: string,
): Promise<Array<{ template: TemplateRow; team: Pick<TeamRow, "team_id" | "name"> }>> {
  const rows = await db
    .selectFrom("templates")
    .innerJoin("teams", "teams.team_id", "templates.team_id")
    .selectAll("templates")
    .select("teams.name as team_name")
    .where("templates.name", "=", name)
    .orderBy("templates.created_at", "asc")
    .execute();
  return rows.map(({ team_name, ...template }) => ({
    template,
    team: { team_id: template.team_id, name: team_name },
  }));
}

/** One page of a team's templates (its snapshots are listed apart), newest first with the id as tie-breaker. */
export async function listTeamTemplates(
  db: DB,
  teamID: string,
  page: { limit: number; after?: { time: Date; id: string } },
): Promise<TemplateRow[]> {
  let query = db
    .selectFrom("templates")
    .selectAll()
    .where("team_id", "=", teamID)
    .where("snapshot", "=", false);
  const { after } = page;
  if (after) {
    query = query.where((eb) =>
      eb(eb.refTuple("created_at", "template_id"), "<", eb.tuple(after.time, after.id)),
    );
  }
  return query.orderBy("created_at", "desc").orderBy("template_id", "desc").limit(page.limit).execute();
}

export async function setTemplatePublic(
  db: DB,
  templateID: string,
  isPublic: boolean,
): Promise<TemplateRow | undefined> {
  return db
    .updateTable("templates")
    .set({ public: isPublic, updated_at: new Date() })
    .where("template_id", "=", templateID)
    .returningAll()
    .executeTakeFirst();
}

/** Sandboxes get the resources of the latest ready build: it becomes the template's. */
export async function applyReadyBuild(
  db: DB,
  templateID: string,
  build: { cpuCount: number; memoryMB: number; diskSizeMB: number },
): Promise<void> {
  await db
    .updateTable("templates")
    .set({
      cpu_count: build.cpuCount,
      memory_mb: build.memoryMB,
      disk_size_mb: build.diskSizeMB,
      updated_at: new Date(),
    })
    .where("template_id", "=", templateID)
    .execute();
}

export async function recordSpawn(db: DB, templateID: string, at = new Date()): Promise<void> {
  await db
    .updateTable("templates")
    .set({ spawn_count: sql`spawn_count + 1`, last_spawned_at: at })
    .where("template_id", "=", templateID)
    .execute();
}

/** Deletes the template with its builds, logs and tags; answers whether it existed. */
export async function deleteTemplate(db: DB, templateID: string): Promise<boolean> {
  const result = await db.deleteFrom("templates").where("template_id", "=", templateID).executeTakeFirst();
  return (result.numDeletedRows ?? 0n) > 0n;
}
