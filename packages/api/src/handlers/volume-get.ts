/** GET /volumes/{volumeID}: the team's volume with its token (and its use); another team's is a 404. */
import { createRoute } from "@hono/zod-openapi";
import type { APIContext } from "../context.js";
import type { App } from "../http/env.js";
import { errorJSON, errorResponses, jsonResponse } from "../http/schemas.js";
import { VolumeAndTokenSchema, VolumeIDParamsSchema, volumeAndTokenView } from "../http/volume-schemas.js";
import { getVolumeInfo } from "../volume/volumes.js";
import { SECURITY } from "./shared.js";

const route = createRoute({
  method: "get",
  path: "/volumes/{volumeID}",
  summary: "Get a volume",
  tags: ["volumes"],
  security: SECURITY,
  request: { params: VolumeIDParamsSchema },
  responses: {
    200: jsonResponse(VolumeAndTokenSchema, "The volume"),
    ...errorResponses,
    404: errorJSON("No such volume for this team"),
    503: errorJSON("The volume's node is not configured"),
  },
});

export function registerVolumeGet(app: App, ctx: APIContext): void {
  app.openapi(route, async (c) => {
    const info = await getVolumeInfo(ctx, c.get("caller").team, c.req.valid("param").volumeID);
    return c.json(volumeAndTokenView(info, ctx.config.domain), 200);
  });
}
