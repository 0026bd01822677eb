/**
 * The files of COPY steps (step 2 of Template.build): the SDK asks, per COPY, whether the team
 * already uploaded that hash; if not it PUTs the tar to the signed URL answered here. Files belong
 * to the team, not to one template: a rebuild or another template copying the same files skips
 * the upload. Files no build used for FILE_RETENTION_MS are removed (the SDK then uploads again).
 */
import type { APIContext } from "../context.js";
import type { TeamRow } from "../db/schema.js";
import {
  deleteUnusedTemplateFile,
  getTemplateFile,
  listUnusedTemplateFiles,
  touchTemplateFile,
  upsertTemplateFile,
} from "../db/template-files.js";
import { InvalidRequestError } from "../errors.js";
import { FILES_HASH } from "../http/template-schemas.js";
import { findOwnTemplate } from "./resolve.js";

export interface FileUploadLink {
  present: boolean;
  url?: string;
  headers?: Record<string, string>;
}

export async function fileUploadLink(
  ctx: APIContext,
  team: TeamRow,
  templateRef: string,
  hash: string,
): Promise<FileUploadLink> {
  if (!FILES_HASH.test(hash)) {
    throw new InvalidRequestError(`hash: '${hash}' is not the 64 hex characters of a SHA-256`);
  }
  await findOwnTemplate(ctx.db, team, templateRef);
  if (await isUploaded(ctx, team.team_id, hash)) {
    // The SDK skips the upload and starts a build with it: keep it past the retention sweep.
    await touchTemplateFile(ctx.db, team.team_id, hash);
    return { present: true };
  }
  return {
    present: false,
    url: await ctx.fileURLs.uploadURL(team.team_id, hash),
    headers: { "Content-Type": "application/octet-stream" },
  };
}

/** Whether the team's file of that hash is recorded and on this API's disk. */
async function isUploaded(ctx: APIContext, teamID: string, hash: string): Promise<boolean> {
  const file = await getTemplateFile(ctx.db, teamID, hash);
  return file !== undefined && (await ctx.templateFiles.exists(file.path));
}

/** Stores an upload a signed URL authorised (the caller checked the signature). */
export async function storeUpload(
  ctx: APIContext,
  teamID: string,
  hash: string,
  body: ReadableStream<Uint8Array>,
  declaredLength: number | undefined,
): Promise<void> {
  const { size, path } = await ctx.templateFiles.write(teamID, hash, body, declaredLength);
  await upsertTemplateFile(ctx.db, { teamID, hash, size, path });
  ctx.logger.info({ teamID, hash, size }, "template file uploaded");
}

/** How long an uploaded file no build used is kept. */
export const FILE_RETENTION_MS = 7 * 24 * 3600_000;

/**
 * Removes the files no build used for FILE_RETENTION_MS: the record first (only if still unused),
 * then the file on this API's disk. Answers how many went.
 */
export async function removeUnusedFiles(
  ctx: Pick<APIContext, "db" | "templateFiles" | "logger">,
  unusedSince = new Date(Date.now() - FILE_RETENTION_MS),
): Promise<number> {
  let removed = 0;
  for (;;) {
    const batch = await listUnusedTemplateFiles(ctx.db, unusedSince, 100);
    for (const file of batch) {
      if (!(await deleteUnusedTemplateFile(ctx.db, file, unusedSince))) continue;
      await ctx.templateFiles.remove(file.path);
      removed++;
    }
    if (batch.length < 100) break;
  }
  if (removed > 0) ctx.logger.info({ removed, unusedSince }, "uploaded template files no build used removed");
  return removed;
}
