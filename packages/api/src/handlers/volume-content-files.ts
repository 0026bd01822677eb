/**
 * The volume content routes for a file's bytes, with the volume's token:
 *
 *   GET /volumecontent/{volumeID}/file?path=…   readFile (the bytes as they stream from the node)
 *   PUT /volumecontent/{volumeID}/file?path=…   writeFile (octet-stream body; 201 VolumeEntryStat)
 *
 * A write streams to the node, which writes it beside the file and renames it over the name when
 * complete (a symlink of that name is replaced, never followed). The body is exempt from the JSON
 * body limit: its bound is the volume's size, past which the write fails with 507 and nothing of
 * it is kept.
 */
import { createRoute, z } from "@hono/zod-openapi";
import type { APIContext } from "../context.js";
import type { App } from "../http/env.js";
import { errorJSON, jsonResponse } from "../http/schemas.js";
import {
  ContentPathQuerySchema,
  ContentWriteQuerySchema,
  entryView,
  VolumeEntryStatSchema,
  VolumeIDParamsSchema,
} from "../http/volume-schemas.js";
import type { RateLimiter } from "../quotas/rate-limit.js";
import { authorizeVolume } from "../volume/content-auth.js";
import { NodeVolumes } from "../volume/node-volumes.js";
import { contentErrors, VOLUME_CONTENT_PATH, VOLUME_SECURITY } from "./volume-content-paths.js";

const read = createRoute({
  method: "get",
  path: `${VOLUME_CONTENT_PATH}/{volumeID}/file`,
  summary: "Read a file",
  tags: ["volume content"],
  security: VOLUME_SECURITY,
  request: { params: VolumeIDParamsSchema, query: ContentPathQuerySchema },
  responses: {
    200: {
      description: "The file's bytes",
      content: { "application/octet-stream": { schema: z.string().openapi({ format: "binary" }) } },
    },
    ...contentErrors,
  },
});

const write = createRoute({
  method: "put",
  path: `${VOLUME_CONTENT_PATH}/{volumeID}/file`,
  summary: "Write a file (replacing one of that name)",
  tags: ["volume content"],
  security: VOLUME_SECURITY,
  request: { params: VolumeIDParamsSchema, query: ContentWriteQuerySchema },
  responses: {
    201: jsonResponse(VolumeEntryStatSchema, "The file as written"),
    ...contentErrors,
    507: errorJSON("The volume is full"),
  },
});

export function registerVolumeContentFiles(app: App, ctx: APIContext, limiter: RateLimiter): void {
  app.openapi(read, async (c) => {
    const row = await authorizeVolume(
      ctx,
      limiter,
      c.req.valid("param").volumeID,
      c.req.header("authorization"),
    );
    const aborted = new AbortController();
    c.req.raw.signal?.addEventListener("abort", () => aborted.abort(), { once: true });
    const { bytes } = await NodeVolumes.of(ctx, row).read(c.req.valid("query").path, aborted.signal);
    const iterator = bytes[Symbol.asyncIterator]();
    const body = new ReadableStream<Uint8Array>({
      async pull(controller) {
        try {
          const next = await iterator.next();
          if (next.done) controller.close();
          else controller.enqueue(next.value);
        } catch (err) {
          controller.error(err);
        }
      },
      cancel() {
        aborted.abort();
      },
    });
    // No Content-Length: a sandbox may change the file while it streams; its end is where it ends.
    return c.body(body, 200, { "Content-Type": "application/octet-stream" });
  });

  app.openapi(write, async (c) => {
    const row = await authorizeVolume(
      ctx,
      limiter,
      c.req.valid("param").volumeID,
      c.req.header("authorization"),
    );
    const { path, uid, gid, mode } = c.req.valid("query");
    const aborted = new AbortController();
    c.req.raw.signal?.addEventListener("abort", () => aborted.abort(), { once: true });
    const body = c.req.raw.body;
    const bytes: AsyncIterable<Uint8Array> = body ?? (async function* () {})();
    const entry = await NodeVolumes.of(ctx, row).write(path, { uid, gid, mode }, bytes, aborted.signal);
    return c.json(entryView(entry), 201);
  });
}

/** Whether a request is a volume file upload (exempt from the JSON body limit and its NUL check). */
export function isVolumeFileUpload(method: string, path: string): boolean {
  return method === "PUT" && path.startsWith(`${VOLUME_CONTENT_PATH}/`) && path.endsWith("/file");
}
