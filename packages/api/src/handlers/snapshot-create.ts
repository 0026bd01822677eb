/**
 * POST /sandboxes/{sandboxID}/snapshots: take a snapshot of a running sandbox (201 SnapshotInfo);
 * the sandbox runs on. 404 for a sandbox the team does not have, 409 for a paused one or a name
 * of one of the team's templates, 400 for a malformed name, 429 past the team's maxSnapshots.
 */
import { createRoute } from "@hono/zod-openapi";
import type { APIContext } from "../context.js";
import type { App } from "../http/env.js";
import {
  errorJSON,
  errorResponses,
  jsonBody,
  jsonResponse,
  notFoundResponse,
  SandboxIDParamsSchema,
} from "../http/schemas.js";
import { SandboxSnapshotRequestSchema, SnapshotInfoSchema } from "../http/snapshot-schemas.js";
import { createSnapshot } from "../snapshot/create.js";
import { SECURITY } from "./shared.js";

const route = createRoute({
  method: "post",
  path: "/sandboxes/{sandboxID}/snapshots",
  summary: "Take a snapshot of a sandbox",
  tags: ["snapshots"],
  security: SECURITY,
  request: { params: SandboxIDParamsSchema, body: jsonBody(SandboxSnapshotRequestSchema, false) },
  responses: {
    201: jsonResponse(SnapshotInfoSchema, "The snapshot; Sandbox.create takes its snapshotID"),
    ...errorResponses,
    ...notFoundResponse,
    409: errorJSON("Paused, between states, or the name is a template's"),
    429: errorJSON("The team holds its maxSnapshots"),
  },
});

export function registerSnapshotCreate(app: App, ctx: APIContext): void {
  app.openapi(route, async (c) => {
    const body = c.req.valid("json") ?? {};
    const info = await createSnapshot(ctx, c.get("caller").team, c.req.valid("param").sandboxID, body.name);
    return c.json(info, 201);
  });
}
