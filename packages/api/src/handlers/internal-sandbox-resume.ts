/**
 * POST /internal/sandboxes/{sandboxID}/resume: a client proxy's auto-resume when it runs apart from
 * the API (a fleet). Traffic for a paused sandbox created with autoResume resumes it (sandbox/
 * resume.ts `autoResume`, the rules of the in-process proxy) and gets its new routing entry.
 * Guarded by the deployment's node token (`Authorization: Bearer <MOAT_NODE_TOKEN>`), compared in
 * constant time: whoever holds it can wake any team's sandbox. 404: unknown or stopped; 409: it
 * cannot be resumed by traffic now (no autoResume, between states, its node or quota full).
 */
import { createRoute } from "@hono/zod-openapi";
import { secretsEqual } from "../auth/secrets.js";
import type { APIContext } from "../context.js";
import { getSandbox } from "../db/sandboxes.js";
import { SandboxConflictError, SandboxNotFoundError, UnauthenticatedError } from "../errors.js";
import type { App } from "../http/env.js";
import { CatalogEntrySchema, errorJSON, jsonResponse, SandboxIDParamsSchema } from "../http/schemas.js";
import { autoResume } from "../sandbox/resume.js";

const route = createRoute({
  method: "post",
  path: "/internal/sandboxes/{sandboxID}/resume",
  summary: "Auto-resume of a paused sandbox (client proxy)",
  tags: ["internal"],
  hide: true,
  request: { params: SandboxIDParamsSchema },
  responses: {
    200: jsonResponse(CatalogEntrySchema, "The sandbox runs; where to reach it"),
    401: errorJSON("Missing or wrong node token"),
    404: errorJSON("Unknown or stopped sandbox"),
    409: errorJSON("The sandbox cannot be resumed by traffic now"),
  },
});

export function registerInternalSandboxResume(app: App, ctx: APIContext): void {
  const { nodeToken } = ctx.config;
  app.openapi(route, async (c) => {
    const given = /^Bearer\s+(\S+)\s*$/i.exec(c.req.header("authorization") ?? "")?.[1];
    if (!nodeToken) {
      throw new UnauthenticatedError(
        "this API has no node token: start it with MOAT_NODE_TOKEN, the same as the proxies and nodes",
      );
    }
    if (!secretsEqual(nodeToken, given)) {
      throw new UnauthenticatedError(
        "missing or wrong node token: send Authorization: Bearer <MOAT_NODE_TOKEN>",
      );
    }
    const { sandboxID } = c.req.valid("param");
    const entry = await autoResume(ctx, sandboxID);
    if (entry) return c.json(entry, 200);
    const row = await getSandbox(ctx.db, sandboxID);
    if (!row || row.state === "killed" || row.state === "killing") throw new SandboxNotFoundError(sandboxID);
    throw new SandboxConflictError(
      sandboxID,
      row.state,
      row.auto_resume
        ? `sandbox '${sandboxID}' cannot be resumed now (${row.state}); try again in a moment`
        : `sandbox '${sandboxID}' was not created with autoResume: resume it through the API (connect)`,
    );
  });
}
