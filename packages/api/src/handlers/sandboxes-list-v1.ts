/** GET /sandboxes: the team's running sandboxes (deprecated list; SDK 2.x uses /v2/sandboxes). */
import { createRoute, z } from "@hono/zod-openapi";
import type { APIContext } from "../context.js";
import { listSandboxes } from "../db/sandboxes.js";
import type { App } from "../http/env.js";
import { errorResponses, jsonResponse, ListedSandboxSchema } from "../http/schemas.js";
import { listedSandboxView } from "../http/views.js";
import { RUNNING_STATES } from "../sandbox/states.js";
import { MetadataQuerySchema, parseMetadataFilter } from "./list-filters.js";
import { SECURITY } from "./shared.js";

const route = createRoute({
  method: "get",
  path: "/sandboxes",
  summary: "List running sandboxes (deprecated)",
  tags: ["sandboxes"],
  security: SECURITY,
  request: { query: z.object({ metadata: MetadataQuerySchema }) },
  responses: { 200: jsonResponse(z.array(ListedSandboxSchema), "Running sandboxes"), ...errorResponses },
});

/** The v1 list is unpaged; this bounds one answer. */
const MAX_V1_LIST = 10_000;

export function registerSandboxesListV1(app: App, ctx: APIContext): void {
  app.openapi(route, async (c) => {
    const rows = await listSandboxes(
      ctx.db,
      {
        teamID: c.get("caller").team.team_id,
        states: RUNNING_STATES,
        metadata: parseMetadataFilter(c.req.valid("query").metadata),
      },
      { order: "desc", limit: MAX_V1_LIST },
    );
    return c.json(rows.map(listedSandboxView), 200);
  });
}
