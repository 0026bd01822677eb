/**
 * Typed queries on template tags. Each assignment is a row; a tag names the build it was given to
 * last among the ready ones (a failed rebuild under a tag leaves the tag where it was).
 */
import { sql } from "kysely";
import type { DB } from "./database.js";

/** Gives each tag to the build (again: an assignment repeated now becomes the newest). */
export async function assignTags(
  db: DB,
  templateID: string,
  buildID: string,
  tags: readonly string[],
): Promise<void> {
  if (tags.length === 0) return;
  const now = new Date();
  await db
    .insertInto("template_tags")
    .values(tags.map((tag) => ({ template_id: templateID, tag, build_id: buildID, created_at: now })))
    .onConflict((oc) => oc.columns(["template_id", "tag", "build_id"]).doUpdateSet({ created_at: now }))
    .execute();
}

export async function deleteTags(db: DB, templateID: string, tags: readonly string[]): Promise<void> {
  if (tags.length === 0) return;
  await db
    .deleteFrom("template_tags")
    .where("template_id", "=", templateID)
    .where("tag", "in", tags)
    .execute();
}

/** Each tag with the ready build it names and when it was given to it, by tag. */
export async function listReadyTags(
  db: DB,
  templateID: string,
): Promise<Array<{ tag: string; build_id: string; created_at: Date }>> {
  return db
    .selectFrom("template_tags")
    .innerJoin("template_builds", "template_builds.build_id", "template_tags.build_id")
    .select(["template_tags.tag", "template_tags.build_id", "template_tags.created_at"])
    .distinctOn("template_tags.tag")
    .where("template_tags.template_id", "=", templateID)
    .where("template_builds.status", "=", "ready")
    .orderBy("template_tags.tag")
    .orderBy(sql`template_tags.created_at`, "desc")
    .execute();
}
