/**
 * The files of COPY steps (step 2 of Template.build): the SDK asks, per COPY, whether the team
 * already uploaded that hash; if not it PUTs the tar to the signed URL answered here. Files belong
 * to the team, not to one template: a rebuild or another template copying the same files skips
 * the upload. Files no build used for FILE_RETENTION_MS are removed (the SDK then uploads again).
 *
 * The hash is the client's claim and only names the file within its team. The server cannot
 * recompute it from the tar (the SDK hashes each directory's size on the client's filesystem,
 * which a tar does not carry), so the API hashes what it receives (SHA-256 of the tar) and builds
 * are cached by that: a file uploaded under another file's hash is cached as what it is.
 */
import type { APIContext } from "../context.js";
import type { TeamRow } from "../db/schema.js";
import { getTeam } from "../db/teams.js";
import {
  deleteUnusedTemplateFile,
  getTemplateFile,
  listUnusedTemplateFiles,
  storedFileBytes,
  touchTemplateFile,
  upsertTemplateFile,
} from "../db/template-files.js";
import { ForbiddenError, InvalidRequestError } from "../errors.js";
import { teamLimits } from "../quotas/limits.js";
import { checkUploadSpace, takeUploadSpace } from "../quotas/reserve.js";
import { findOwnTemplate } from "./resolve.js";

/** SHA-256 hex: what the SDK computes over a COPY step's files, and names them by. */
export const FILES_HASH = /^[0-9a-f]{64}$/;

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

/**
 * Whether the team's file of that hash is recorded with the hash of its content and on this API's
 * disk (one recorded before the API hashed uploads is uploaded again).
 */
async function isUploaded(ctx: APIContext, teamID: string, hash: string): Promise<boolean> {
  const file = await getTemplateFile(ctx.db, teamID, hash);
  return file?.contentSHA256 != null && (await ctx.templateFiles.exists(file.path));
}

/**
 * Stores an upload a signed URL authorised (the caller checked the signature), within the team's
 * limits: the file's size (maxUploadBytes) and all its files together (maxStoredUploadBytes),
 * counted under the team's lock when the file is put in place.
 */
export async function storeUpload(
  ctx: APIContext,
  teamID: string,
  hash: string,
  body: ReadableStream<Uint8Array>,
  declaredLength: number | undefined,
): Promise<void> {
  const team = await getTeam(ctx.db, teamID);
  if (!team) throw new ForbiddenError("the team this upload URL was made for no longer exists");
  const limits = teamLimits(ctx.config.quotas, team);
  // A declared size past what is left is refused before any byte is stored.
  if (declaredLength !== undefined) {
    checkUploadSpace(limits, await storedFileBytes(ctx.db, teamID, hash), declaredLength);
  }
  const received = await ctx.templateFiles.receive(teamID, hash, body, declaredLength, limits.maxUploadBytes);
  try {
    await takeUploadSpace(ctx, teamID, hash, received.size, async (tx) => {
      const path = await ctx.templateFiles.commit(received, teamID, hash);
      await upsertTemplateFile(tx, {
        teamID,
        hash,
        size: received.size,
        path,
        contentSHA256: received.sha256,
      });
    });
  } catch (err) {
    await ctx.templateFiles.discard(received);
    throw err;
  }
  ctx.logger.info({ teamID, hash, size: received.size, sha256: received.sha256 }, "template file uploaded");
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
