/**
 * The volume content routes that name a path (E2B's volume content API, which the SDK's `Volume`
 * calls with the volume's token as `Authorization: Bearer`):
 *
 *   GET    /volumecontent/{volumeID}/path  getInfo/exists   PATCH /…/path  updateMetadata
 *   DELETE /volumecontent/{volumeID}/path  remove (a directory with what is in it)
 *   GET    /volumecontent/{volumeID}/dir   list (depth)     POST  /…/dir   makeDir (force: parents)
 *
 * Paths are from the volume's root; the node resolves them beneath it without following links
 * (orchestrator storage/volume-files.ts). Errors: 400 bad path or a link on the way, 401 no or
 * another volume's token, 404 no such volume or path, 409 exists.
 */
import { createRoute, z } from "@hono/zod-openapi";
import type { APIContext } from "../context.js";
import type { App } from "../http/env.js";
import { errorJSON, jsonBody, jsonResponse } from "../http/schemas.js";
import {
  ContentListQuerySchema,
  ContentMetadataBodySchema,
  ContentPathQuerySchema,
  ContentWriteQuerySchema,
  entryView,
  VolumeEntryStatSchema,
  VolumeIDParamsSchema,
} from "../http/volume-schemas.js";
import type { RateLimiter } from "../quotas/rate-limit.js";
import { authorizeVolume } from "../volume/content-auth.js";
import { NodeVolumes } from "../volume/node-volumes.js";

export const VOLUME_CONTENT_PATH = "/volumecontent";
export const VOLUME_SECURITY: Array<Record<string, string[]>> = [{ VolumeToken: [] }];

export const contentErrors = {
  400: errorJSON("Invalid path or metadata, or a symbolic link on the way (links are never followed)"),
  401: errorJSON("No token, or not this volume's token"),
  404: errorJSON("No such volume, or no such path in it"),
  429: errorJSON("Too many requests to this volume"),
  500: errorJSON("Internal error"),
  503: errorJSON("The volume's node is unavailable; retry"),
};

const stat = createRoute({
  method: "get",
  path: `${VOLUME_CONTENT_PATH}/{volumeID}/path`,
  summary: "Get a path's information",
  tags: ["volume content"],
  security: VOLUME_SECURITY,
  request: { params: VolumeIDParamsSchema, query: ContentPathQuerySchema },
  responses: { 200: jsonResponse(VolumeEntryStatSchema, "The entry"), ...contentErrors },
});

const update = createRoute({
  method: "patch",
  path: `${VOLUME_CONTENT_PATH}/{volumeID}/path`,
  summary: "Change a path's owner or mode",
  tags: ["volume content"],
  security: VOLUME_SECURITY,
  request: {
    params: VolumeIDParamsSchema,
    query: ContentPathQuerySchema,
    body: jsonBody(ContentMetadataBodySchema),
  },
  responses: { 200: jsonResponse(VolumeEntryStatSchema, "The entry as changed"), ...contentErrors },
});

const remove = createRoute({
  method: "delete",
  path: `${VOLUME_CONTENT_PATH}/{volumeID}/path`,
  summary: "Remove a file, a link, or a directory with what is in it",
  tags: ["volume content"],
  security: VOLUME_SECURITY,
  request: { params: VolumeIDParamsSchema, query: ContentPathQuerySchema },
  responses: {
    204: { description: "Removed" },
    ...contentErrors,
    409: errorJSON("The directory kept changing while it was removed; retry"),
  },
});

const list = createRoute({
  method: "get",
  path: `${VOLUME_CONTENT_PATH}/{volumeID}/dir`,
  summary: "List a directory",
  tags: ["volume content"],
  security: VOLUME_SECURITY,
  request: { params: VolumeIDParamsSchema, query: ContentListQuerySchema },
  responses: {
    200: jsonResponse(
      z.array(VolumeEntryStatSchema).openapi("VolumeDirectoryListing"),
      "The entries, by name",
    ),
    ...contentErrors,
  },
});

const makeDir = createRoute({
  method: "post",
  path: `${VOLUME_CONTENT_PATH}/{volumeID}/dir`,
  summary: "Make a directory",
  tags: ["volume content"],
  security: VOLUME_SECURITY,
  request: { params: VolumeIDParamsSchema, query: ContentWriteQuerySchema },
  responses: {
    201: jsonResponse(VolumeEntryStatSchema, "The directory"),
    ...contentErrors,
    409: errorJSON("It exists (without force)"),
  },
});

export function registerVolumeContentPaths(app: App, ctx: APIContext, limiter: RateLimiter): void {
  app.openAPIRegistry.registerComponent("securitySchemes", "VolumeToken", {
    type: "http",
    scheme: "bearer",
    description: "The volume's token (VolumeAndToken.token)",
  });
  const nodeOf = async (volumeID: string, authorization: string | undefined) =>
    NodeVolumes.of(ctx, await authorizeVolume(ctx, limiter, volumeID, authorization));

  app.openapi(stat, async (c) => {
    const volume = await nodeOf(c.req.valid("param").volumeID, c.req.header("authorization"));
    return c.json(entryView(await volume.stat(c.req.valid("query").path)), 200);
  });
  app.openapi(update, async (c) => {
    const volume = await nodeOf(c.req.valid("param").volumeID, c.req.header("authorization"));
    const entry = await volume.updateMetadata(c.req.valid("query").path, c.req.valid("json"));
    return c.json(entryView(entry), 200);
  });
  app.openapi(remove, async (c) => {
    const volume = await nodeOf(c.req.valid("param").volumeID, c.req.header("authorization"));
    await volume.remove(c.req.valid("query").path);
    return c.body(null, 204);
  });
  app.openapi(list, async (c) => {
    const volume = await nodeOf(c.req.valid("param").volumeID, c.req.header("authorization"));
    const { path, depth } = c.req.valid("query");
    const entries = await volume.list(path, depth ?? 1);
    return c.json(entries.map(entryView), 200);
  });
  app.openapi(makeDir, async (c) => {
    const volume = await nodeOf(c.req.valid("param").volumeID, c.req.header("authorization"));
    const { path, uid, gid, mode, force } = c.req.valid("query");
    const entry = await volume.makeDir(path, { uid, gid, mode }, force === "true");
    return c.json(entryView(entry), 201);
  });
}
