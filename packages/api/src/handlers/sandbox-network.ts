/**
 * PUT /sandboxes/{id}/network (the SDK's `updateNetwork`): replaces the sandbox's egress rules as a
 * whole; a field left out is cleared. Applied at once while it runs (connections already open
 * carry on, new ones follow the new rules), on its resume while it is paused.
 */
import { createRoute } from "@hono/zod-openapi";
import type { APIContext } from "../context.js";
import type { App } from "../http/env.js";
import {
  conflictResponse,
  errorJSON,
  errorResponses,
  jsonBody,
  NetworkUpdateSchema,
  notFoundResponse,
  SandboxIDParamsSchema,
} from "../http/schemas.js";
import { updateSandboxNetwork } from "../sandbox/network.js";
import { SECURITY } from "./shared.js";

const route = createRoute({
  method: "put",
  path: "/sandboxes/{sandboxID}/network",
  summary: "Replace a sandbox's egress rules",
  tags: ["sandboxes"],
  security: SECURITY,
  request: { params: SandboxIDParamsSchema, body: jsonBody(NetworkUpdateSchema) },
  responses: {
    204: { description: "The new rules are in force (or kept for the resume of a paused sandbox)" },
    ...errorResponses,
    ...notFoundResponse,
    ...conflictResponse,
    501: errorJSON("A requested feature is not supported yet"),
  },
});

export function registerSandboxNetwork(app: App, ctx: APIContext): void {
  app.openapi(route, async (c) => {
    const { team } = c.get("caller");
    await updateSandboxNetwork(ctx, team.team_id, c.req.valid("param").sandboxID, c.req.valid("json"));
    return c.body(null, 204);
  });
}
