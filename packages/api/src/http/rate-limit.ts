/** The request rate middleware: each authenticated request takes from its credential's bucket. */
import type { MiddlewareHandler } from "hono";
import { RateLimitedError } from "../errors.js";
import type { RateLimiter } from "../quotas/rate-limit.js";
import type { AppEnv } from "./env.js";

/** Counts each authenticated request against its credential (after the auth middleware). */
export function rateLimit(limiter: RateLimiter): MiddlewareHandler<AppEnv> {
  // A path several team-route patterns match ("/sandboxes" and "/sandboxes/*") is counted once.
  const counted = new WeakSet<Request>();
  return async (c, next) => {
    if (counted.has(c.req.raw)) return next();
    counted.add(c.req.raw);
    const { credential, limits } = c.get("caller");
    const wait = limiter.take(credential.id, limits.requestsPerSecond, limits.requestBurst);
    if (wait > 0) {
      throw new RateLimitedError(
        `too many requests with this API key: the team's limit is ${limits.requestsPerSecond} per second ` +
          `(bursts of ${limits.requestBurst}); retry in ${wait} s`,
        wait,
      );
    }
    await next();
  };
}
