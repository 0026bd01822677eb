/**
 * The service's own Prometheus metrics (GET /metrics): requests by route pattern, method and
 * status, their durations, and the sandboxes by state. Each API instance has its own registry, so
 * several instances (tests) never collide.
 */

import type { MiddlewareHandler } from "hono";
import { routePath } from "hono/route";
import { Counter, collectDefaultMetrics, Gauge, Histogram, Registry } from "prom-client";
import type { DB } from "../db/database.js";
import { countByState } from "../db/sandboxes.js";
import { LIVE_STATES } from "../sandbox/states.js";

export class APIMetrics {
  readonly registry = new Registry();
  private readonly requests: Counter<"method" | "route" | "status">;
  private readonly durations: Histogram<"method" | "route" | "status">;

  constructor(db: DB, options: { processMetrics?: boolean } = {}) {
    if (options.processMetrics) collectDefaultMetrics({ register: this.registry, prefix: "moat_api_" });
    this.requests = new Counter({
      name: "moat_api_requests_total",
      help: "HTTP requests answered, by route pattern, method and status",
      labelNames: ["method", "route", "status"],
      registers: [this.registry],
    });
    this.durations = new Histogram({
      name: "moat_api_request_duration_seconds",
      help: "HTTP request durations, by route pattern, method and status",
      labelNames: ["method", "route", "status"],
      buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
      registers: [this.registry],
    });
    new Gauge({
      name: "moat_api_sandboxes",
      help: "Sandboxes known to the API, by state (killed ones excluded)",
      labelNames: ["state"],
      registers: [this.registry],
      async collect() {
        const counts = await countByState(db);
        this.reset();
        for (const state of LIVE_STATES) {
          this.set({ state }, counts.get(state) ?? 0);
        }
      },
    });
  }

  middleware(): MiddlewareHandler {
    return async (c, next) => {
      const started = performance.now();
      try {
        await next();
      } finally {
        // The last route pattern that matched (a middleware's, e.g. "/*", for unknown paths):
        // labels come from the registered patterns only, so junk paths add no series.
        const route = routePath(c, -1);
        const labels = { method: c.req.method, route, status: String(c.res.status) };
        this.requests.inc(labels);
        this.durations.observe(labels, (performance.now() - started) / 1000);
      }
    };
  }
}
