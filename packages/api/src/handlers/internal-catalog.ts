/**
 * GET /internal/catalog/{sandboxID}: the routing catalog over HTTP, for a client proxy running in
 * another process. Guarded by `X-Admin-Token`; absent (404) when no admin token is configured.
 * Answers the `CatalogEntry` of @moat/shared, or 404 when the sandbox is unknown or stopped.
 */
import { createRoute } from "@hono/zod-openapi";
import { secretsEqual } from "../auth/secrets.js";
import type { APIContext } from "../context.js";
import { SandboxNotFoundError, UnauthenticatedError } from "../errors.js";
import type { App } from "../http/env.js";
import { CatalogEntrySchema, errorJSON, jsonResponse, SandboxIDParamsSchema } from "../http/schemas.js";

const route = createRoute({
  method: "get",
  path: "/internal/catalog/{sandboxID}",
  summary: "Routing catalog entry of a sandbox (client proxy)",
  tags: ["internal"],
  hide: true,
  request: { params: SandboxIDParamsSchema },
  responses: {
    200: jsonResponse(CatalogEntrySchema, "Where and how to reach the sandbox"),
    401: errorJSON("Missing or wrong X-Admin-Token"),
    404: errorJSON("Unknown or stopped sandbox"),
  },
});

export function registerInternalCatalog(app: App, ctx: APIContext): void {
  const adminToken = ctx.config.adminToken;
  if (!adminToken) return;
  app.openapi(route, async (c) => {
    if (!secretsEqual(adminToken, c.req.header("x-admin-token"))) {
      throw new UnauthenticatedError("missing or wrong X-Admin-Token");
    }
    const { sandboxID } = c.req.valid("param");
    const entry = await ctx.catalog.lookup(sandboxID);
    if (!entry) throw new SandboxNotFoundError(sandboxID);
    return c.json(entry, 200);
  });
}
