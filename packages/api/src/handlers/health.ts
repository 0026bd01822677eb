/** GET /health: 200 while the database answers, 503 otherwise. */
import { createRoute, z } from "@hono/zod-openapi";
import { sql } from "kysely";
import type { APIContext } from "../context.js";
import type { App } from "../http/env.js";
import { errorJSON } from "../http/schemas.js";

const route = createRoute({
  method: "get",
  path: "/health",
  summary: "Health check",
  tags: ["service"],
  responses: {
    200: { description: "Healthy", content: { "text/plain": { schema: z.string() } } },
    503: errorJSON("Unhealthy"),
  },
});

export function registerHealth(app: App, ctx: APIContext): void {
  app.openapi(route, async (c) => {
    try {
      await sql`select 1`.execute(ctx.db);
    } catch (err) {
      ctx.logger.warn({ err }, "health check: database unreachable");
      return c.json({ code: 503, message: "database unreachable", requestId: c.get("requestId") }, 503);
    }
    return c.text("Health check successful", 200);
  });
}
