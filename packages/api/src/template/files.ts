/**
 * The files of COPY steps (step 2 of Template.build): the SDK asks, per COPY, whether the team
 * already uploaded that hash; if not it PUTs the tar to the signed URL answered here. Files belong
 * to the team, not to one template: a rebuild or another template copying the same files skips
 * the upload.
 */
import type { APIContext } from "../context.js";
import type { TeamRow } from "../db/schema.js";
import { getTemplateFile, upsertTemplateFile } from "../db/template-files.js";
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
  if (await isUploaded(ctx, team.team_id, hash)) return { present: true };
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
