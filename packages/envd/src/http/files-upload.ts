import type { Handler } from "hono";
import type { EnvdContext } from "../context.js";
import { checkFileAccess, fileUser } from "./auth.js";
import { type HTTPEnv, nodeRequest } from "./bindings.js";
import { decodedBody } from "./body.js";
import { HTTPError } from "./errors.js";
import { receiveMultipart } from "./multipart.js";
import { restPath } from "./paths.js";
import { metadataFromHeaders } from "./upload-metadata.js";
import { type WrittenFile, writeFileAs } from "./write-file.js";

/**
 * POST /files: uploads one or more files, overwriting and creating parent dirs as the user.
 * `multipart/form-data` carries parts named `file` whose filename is the destination (unless the
 * `path` query names it); `application/octet-stream` is one file at `path`. Either may be
 * `Content-Encoding: gzip`. Nothing is buffered: each file streams to disk.
 */
export function uploadFiles(ctx: EnvdContext): Handler<HTTPEnv> {
  return async (c) => {
    const via = checkFileAccess(ctx, c, "write");
    const user = fileUser(ctx, c, via, c.req.query("username"));
    const incoming = nodeRequest(c);
    const metadata = metadataFromHeaders(incoming.headersDistinct);
    const queryPath = c.req.query("path") || undefined;
    const contentType = incoming.headers["content-type"] ?? "";
    const mediaType = contentType.split(";", 1)[0]!.trim().toLowerCase();
    const isRaw = mediaType === "application/octet-stream";
    if (!isRaw && !mediaType.startsWith("multipart/")) {
      throw new HTTPError(
        400,
        `unsupported content type '${contentType}', expected multipart/form-data or application/octet-stream`,
      );
    }
    if (isRaw && !queryPath) throw new HTTPError(400, "path query parameter is required for raw body upload");

    const { defaultWorkdir } = ctx.state;
    const body = decodedBody(incoming);
    const files: WrittenFile[] = [];
    try {
      if (isRaw) {
        const target = restPath(queryPath!, user, defaultWorkdir);
        files.push(await writeFileAs(target, () => body.stream, user, metadata, ctx.logger));
      } else {
        await receiveMultipart(incoming.headers, body.stream, async (part) => {
          const requested = queryPath ?? part.filename;
          if (!requested) {
            throw new HTTPError(400, "file part has no filename and no path query parameter was given");
          }
          const target = restPath(requested, user, defaultWorkdir);
          if (files.some((f) => f.path === target)) {
            const written = files.map((f) => f.path).join(", ");
            throw new HTTPError(
              400,
              `you cannot upload multiple files to the same path '${target}' in one upload request; already written: ${written}`,
            );
          }
          files.push(await writeFileAs(target, () => part.stream, user, metadata, ctx.logger));
        });
      }
    } finally {
      body.dispose();
    }
    if (files.length === 0) throw new HTTPError(400, "no file part named 'file' in the upload");
    ctx.logger.debug({ files: files.map((f) => f.path), user: user.name }, "files uploaded");
    return c.json(files);
  };
}
