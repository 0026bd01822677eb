/**
 * POST /volumes: a new volume of the team (201 VolumeAndToken). 400 for a bad name, 409 when the
 * team has one of that name, 429 past the team's maxVolumes.
 */
import { createRoute } from "@hono/zod-openapi";
import type { APIContext } from "../context.js";
import type { App } from "../http/env.js";
import { errorJSON, errorResponses, jsonBody, jsonResponse } from "../http/schemas.js";
import { NewVolumeSchema, VolumeAndTokenSchema, volumeAndTokenView } from "../http/volume-schemas.js";
import { createVolume } from "../volume/volumes.js";
import { SECURITY } from "./shared.js";

const route = createRoute({
  method: "post",
  path: "/volumes",
  summary: "Create a volume",
  tags: ["volumes"],
  security: SECURITY,
  request: { body: jsonBody(NewVolumeSchema) },
  responses: {
    201: jsonResponse(VolumeAndTokenSchema, "The volume, with the token of its content routes"),
    ...errorResponses,
    409: errorJSON("The team has a volume of that name"),
    429: errorJSON("The team holds its maxVolumes, or no node can hold the volume now"),
    503: errorJSON("The volume's node is unavailable; retry"),
  },
});

export function registerVolumeCreate(app: App, ctx: APIContext): void {
  app.openapi(route, async (c) => {
    const info = await createVolume(ctx, c.get("caller").team, c.req.valid("json").name);
    return c.json(volumeAndTokenView(info, ctx.config.domain), 201);
  });
}
