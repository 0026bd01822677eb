/**
 * GET /template-files/{teamID}/{hash}: the signed download URL of a COPY step's files, which a
 * node fetches during the build (`files_url` of the step). No API key: the URL's signature
 * authorises it (403 when it is wrong or expired).
 */
import { createRoute, z } from "@hono/zod-openapi";
import type { APIContext } from "../context.js";
import { getTemplateFile } from "../db/template-files.js";
import { ForbiddenError, TemplateNotFoundError } from "../errors.js";
import type { App } from "../http/env.js";
import { errorJSON } from "../http/schemas.js";
import { TEMPLATE_FILES_PATH } from "../template/file-urls.js";
import { FILES_HASH } from "../template/files.js";

export const FileParamsSchema = z.object({
  teamID: z
    .string()
    .regex(/^[0-9a-f-]{36}$/, "not a team id")
    .openapi({ param: { name: "teamID", in: "path" } }),
  hash: z
    .string()
    .regex(FILES_HASH, "not a files hash")
    .openapi({ param: { name: "hash", in: "path" } }),
});

export const SignedQuerySchema = z.object({
  expires: z.string().optional().openapi({ description: "Unix seconds" }),
  signature: z.string().optional(),
});

const route = createRoute({
  method: "get",
  path: `${TEMPLATE_FILES_PATH}/{teamID}/{hash}`,
  summary: "Download a COPY step's files (signed URL)",
  tags: ["template files"],
  hide: true,
  request: { params: FileParamsSchema, query: SignedQuerySchema },
  responses: {
    200: {
      description: "The tar, as uploaded",
      content: { "application/octet-stream": { schema: z.string().openapi({ format: "binary" }) } },
    },
    403: errorJSON("Invalid or expired signature"),
    404: errorJSON("Not uploaded"),
  },
});

export function registerTemplateFilesDownload(app: App, ctx: APIContext): void {
  app.openapi(route, async (c) => {
    const { teamID, hash } = c.req.valid("param");
    if (!(await ctx.fileURLs.verify("GET", teamID, hash, c.req.valid("query")))) {
      throw new ForbiddenError("the download URL's signature is invalid or expired");
    }
    const file = await getTemplateFile(ctx.db, teamID, hash);
    const opened = file && (await ctx.templateFiles.open(file.path));
    if (!opened) throw new TemplateNotFoundError(hash, `no files with hash ${hash} were uploaded`);
    return c.body(opened.body, 200, {
      "Content-Type": "application/octet-stream",
      "Content-Length": String(opened.size),
    });
  });
}
