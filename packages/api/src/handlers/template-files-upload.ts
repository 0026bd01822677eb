/**
 * PUT /template-files/{teamID}/{hash}: the signed upload URL of a COPY step's files. No API key:
 * the URL's signature authorises it (403 when it is wrong or expired). The body streams to disk;
 * it is exempt from the JSON body limit and capped at `maxUploadBytes` instead (413).
 */
import { createRoute } from "@hono/zod-openapi";
import type { APIContext } from "../context.js";
import { ForbiddenError, InvalidRequestError } from "../errors.js";
import type { App } from "../http/env.js";
import { errorJSON } from "../http/schemas.js";
import { TEMPLATE_FILES_PATH } from "../template/file-urls.js";
import { storeUpload } from "../template/files.js";
import { FileParamsSchema, SignedQuerySchema } from "./template-files-download.js";

const route = createRoute({
  method: "put",
  path: `${TEMPLATE_FILES_PATH}/{teamID}/{hash}`,
  summary: "Upload a COPY step's files (signed URL)",
  tags: ["template files"],
  hide: true,
  request: { params: FileParamsSchema, query: SignedQuerySchema },
  responses: {
    200: { description: "Stored" },
    400: errorJSON("No body, or a body shorter than its Content-Length"),
    403: errorJSON("Invalid or expired signature"),
    413: errorJSON("Larger than the API accepts"),
  },
});

export function registerTemplateFilesUpload(app: App, ctx: APIContext): void {
  app.openapi(route, async (c) => {
    const { teamID, hash } = c.req.valid("param");
    if (!(await ctx.fileURLs.verify("PUT", teamID, hash, c.req.valid("query")))) {
      throw new ForbiddenError("the upload URL's signature is invalid or expired; ask for a new one");
    }
    const body = c.req.raw.body;
    if (!body) throw new InvalidRequestError("the upload has no body");
    const length = c.req.header("content-length");
    const declared = length === undefined || c.req.header("transfer-encoding") ? undefined : Number(length);
    await storeUpload(ctx, teamID, hash, body, Number.isSafeInteger(declared) ? declared : undefined);
    return c.body(null, 200, { "Content-Length": "0" });
  });
}

/** Whether a request is a template file upload (exempt from the JSON body limit). */
export function isTemplateFileUpload(method: string, path: string): boolean {
  return method === "PUT" && path.startsWith(`${TEMPLATE_FILES_PATH}/`);
}
