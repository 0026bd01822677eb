/** GET /sandboxes/{id}: a sandbox of the team, running or paused. */
import { createRoute } from "@hono/zod-openapi";
import type { APIContext } from "../context.js";
import { getTeamSandbox } from "../db/sandboxes.js";
import { SandboxNotFoundError } from "../errors.js";
import type { App } from "../http/env.js";
import {
  errorResponses,
  jsonResponse,
  notFoundResponse,
  SandboxDetailSchema,
  SandboxIDParamsSchema,
} from "../http/schemas.js";
import { sandboxDetailView } from "../http/views.js";
import { VISIBLE_STATES } from "../sandbox/states.js";
import { SECURITY } from "./shared.js";

const route = createRoute({
  method: "get",
  path: "/sandboxes/{sandboxID}",
  summary: "Get a sandbox",
  tags: ["sandboxes"],
  security: SECURITY,
  request: { params: SandboxIDParamsSchema },
  responses: {
    200: jsonResponse(SandboxDetailSchema, "The sandbox"),
    ...errorResponses,
    ...notFoundResponse,
  },
});

export function registerSandboxGet(app: App, ctx: APIContext): void {
  app.openapi(route, async (c) => {
    const { sandboxID } = c.req.valid("param");
    const row = await getTeamSandbox(ctx.db, c.get("caller").team.team_id, sandboxID, VISIBLE_STATES);
    if (!row) throw new SandboxNotFoundError(sandboxID);
    return c.json(sandboxDetailView(row, ctx.config.domain), 200);
  });
}
