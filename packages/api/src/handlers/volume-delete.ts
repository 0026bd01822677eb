/**
 * DELETE /volumes/{volumeID}: deletes the volume and its files (204). 404 when the team has no such
 * volume (the SDK's `Volume.destroy` answers false), 409 while a sandbox that is not killed
 * (running or paused) mounts it.
 */
import { createRoute } from "@hono/zod-openapi";
import type { APIContext } from "../context.js";
import type { App } from "../http/env.js";
import { errorJSON, errorResponses } from "../http/schemas.js";
import { VolumeIDParamsSchema } from "../http/volume-schemas.js";
import { deleteVolume } from "../volume/volumes.js";
import { SECURITY } from "./shared.js";

const route = createRoute({
  method: "delete",
  path: "/volumes/{volumeID}",
  summary: "Delete a volume",
  tags: ["volumes"],
  security: SECURITY,
  request: { params: VolumeIDParamsSchema },
  responses: {
    204: { description: "Deleted" },
    ...errorResponses,
    404: errorJSON("No such volume for this team"),
    409: errorJSON("Running or paused sandboxes mount the volume"),
    503: errorJSON("The volume's node is unavailable; retry"),
  },
});

export function registerVolumeDelete(app: App, ctx: APIContext): void {
  app.openapi(route, async (c) => {
    await deleteVolume(ctx, c.get("caller").team, c.req.valid("param").volumeID);
    return c.body(null, 204);
  });
}
