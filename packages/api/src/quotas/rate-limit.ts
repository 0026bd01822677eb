/**
 * The request rate of each API key (or access token): a token bucket per credential, holding up to
 * the team's requestBurst and refilled at its requestsPerSecond. A request that finds the bucket
 * empty is a 429 with `Retry-After: <seconds>` (http/rate-limit.ts), which the SDKs wait for and
 * retry. Buckets live in this API process: with several processes behind a balancer a key gets
 * each process's rate (the operator divides the limit by the processes if it must hold exactly).
 */

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
}
