/**
 * The request rate of each API key (or access token): a token bucket per credential, holding up to
 * the team's requestBurst and refilled at its requestsPerSecond. A request that finds the bucket
 * empty is a 429 with `Retry-After: <seconds>`, which the SDKs wait for and retry. Buckets live in
 * this API process: with several processes behind a balancer a key gets each process's rate (the
 * operator divides the limit by the processes if it must hold exactly).
 */
import type { MiddlewareHandler } from "hono";
import { RateLimitedError } from "../errors.js";
import type { AppEnv } from "../http/env.js";

interface Bucket {
  tokens: number;
  /** performance.now() of the last refill. */
  at: number;
}

/** Past this many buckets, full ones (keys idle long enough to refill) are dropped. */
const PRUNE_ABOVE = 10_000;

export class RateLimiter {
  private readonly buckets = new Map<string, Bucket>();

  /** Takes one request for `id`; answers 0, or the whole seconds until one is allowed. */
  take(id: string, rate: number, burst: number, now = performance.now()): number {
    if (rate <= 0) return 0;
    let bucket = this.buckets.get(id);
    if (!bucket) {
      if (this.buckets.size >= PRUNE_ABOVE) this.prune(rate, burst, now);
      bucket = { tokens: burst, at: now };
      this.buckets.set(id, bucket);
    }
    bucket.tokens = Math.min(burst, bucket.tokens + ((now - bucket.at) / 1000) * rate);
    bucket.at = now;
    if (bucket.tokens >= 1) {
      bucket.tokens -= 1;
      return 0;
    }
    return Math.max(1, Math.ceil((1 - bucket.tokens) / rate));
  }

  private prune(rate: number, burst: number, now: number): void {
    for (const [id, bucket] of this.buckets) {
      if (bucket.tokens + ((now - bucket.at) / 1000) * rate >= burst) this.buckets.delete(id);
    }
  }

  /** Counts each authenticated request against its credential (after the auth middleware). */
  middleware(): MiddlewareHandler<AppEnv> {
    // A path several team-route patterns match ("/sandboxes" and "/sandboxes/*") is counted once.
    const counted = new WeakSet<Request>();
    return async (c, next) => {
      if (counted.has(c.req.raw)) return next();
      counted.add(c.req.raw);
      const { credential, limits } = c.get("caller");
      const wait = this.take(credential.id, limits.requestsPerSecond, limits.requestBurst);
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
}
