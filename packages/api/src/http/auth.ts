import type { MiddlewareHandler } from "hono";
import { authenticate } from "../auth/authenticate.js";
import type { DB } from "../db/database.js";
import { type TeamLimits, teamLimits } from "../quotas/limits.js";
import type { AppEnv } from "./env.js";

/** Resolves the calling team (and its limits) from X-API-Key or a bearer access token; 401 otherwise. */
export function requireTeam(db: DB, quotas: TeamLimits): MiddlewareHandler<AppEnv> {
  return async (c, next) => {
    // A path several team-route patterns match ("/sandboxes" and "/sandboxes/*") authenticates once.
    if (c.get("caller")) return next();
    const caller = await authenticate(db, {
      apiKey: c.req.header("x-api-key"),
      authorization: c.req.header("authorization"),
      teamID: c.req.header("x-team-id"),
    });
    c.set("caller", { ...caller, limits: teamLimits(quotas, caller.team) });
    await next();
  };
}
