/** GET /volumes: the team's volumes, oldest first (E2B's `Volume[]`, without tokens). */
import { createRoute, z } from "@hono/zod-openapi";
import type { APIContext } from "../context.js";
import type { App } from "../http/env.js";
import { errorResponses, jsonResponse } from "../http/schemas.js";
import { VolumeSchema, volumeView } from "../http/volume-schemas.js";
import { listVolumes } from "../volume/volumes.js";
import { SECURITY } from "./shared.js";

const route = createRoute({
  method: "get",
  path: "/volumes",
  summary: "List volumes",
  tags: ["volumes"],
  security: SECURITY,
  responses: { 200: jsonResponse(z.array(VolumeSchema), "The team's volumes"), ...errorResponses },
});

export function registerVolumesList(app: App, ctx: APIContext): void {
  app.openapi(route, async (c) => {
    const rows = await listVolumes(ctx, c.get("caller").team);
    return c.json(rows.map(volumeView), 200);
  });
}
