/**
 * A few counters, enough to see what the edge answers: requests by status, tunnels, failures.
 * Served at GET /metrics in Prometheus's text format; `snapshot()` gives the same numbers to code.
 */
import { Counter, Gauge, Registry } from "prom-client";

export interface ProxyMetricsSnapshot {
  /** Every request answered, by the status the client got (the sandbox's or the proxy's own). */
  requestsByStatus: Record<string, number>;
  requestsTotal: number;
  /** WebSocket and other upgrades that became a tunnel. */
  tunnelsTotal: number;
  /** Requests and tunnels in flight now, over all sandboxes. */
  activeConnections: number;
  /** Sandbox-side failures by error code (ECONNREFUSED, ECONNRESET, …). */
  upstreamErrors: Record<string, number>;
  /** Exchanges the client abandoned before the response ended. */
  clientAborts: number;
  /** Client connections closed on arrival because the proxy held its maximum. */
  droppedConnections: number;
}

/** Labels stay few whatever clients and sandboxes send: statuses are 3 digits, error codes errno names. */
const ERROR_CODE = /^E[A-Z0-9_]{1,30}$/;

export class ProxyMetrics {
  /** One per proxy, so several proxies in a process (tests) never share series. */
  readonly registry = new Registry();
  readonly #byStatus = new Map<number, number>();
  readonly #upstreamErrors = new Map<string, number>();
  #tunnels = 0;
  #clientAborts = 0;
  #dropped = 0;
  active = 0;

  constructor() {
    const registers = [this.registry];
    // Read from the numbers above at scrape time: nothing extra on the request path.
    const self = this;
    new Counter({
      name: "moat_proxy_requests_total",
      help: "Requests answered, by the status the client got (the sandbox's or the proxy's own)",
      labelNames: ["status"],
      registers,
      collect() {
        this.reset();
        for (const [status, count] of self.#byStatus) this.inc({ status: String(status) }, count);
      },
    });
    new Counter({
      name: "moat_proxy_tunnels_total",
      help: "WebSocket and other upgrades that became a tunnel",
      registers,
      collect() {
        this.reset();
        this.inc(self.#tunnels);
      },
    });
    new Gauge({
      name: "moat_proxy_active_connections",
      help: "Requests and tunnels in flight, over all sandboxes",
      registers,
      collect() {
        this.set(self.active);
      },
    });
    new Counter({
      name: "moat_proxy_upstream_errors_total",
      help: "Sandbox-side failures, by error code (ECONNREFUSED, ECONNRESET, …)",
      labelNames: ["code"],
      registers,
      collect() {
        this.reset();
        for (const [code, count] of self.#upstreamErrors) this.inc({ code }, count);
      },
    });
    new Counter({
      name: "moat_proxy_client_aborts_total",
      help: "Exchanges the client abandoned before the response ended",
      registers,
      collect() {
        this.reset();
        this.inc(self.#clientAborts);
      },
    });
    new Counter({
      name: "moat_proxy_dropped_connections_total",
      help: "Client connections closed on arrival because the proxy held its maximum",
      registers,
      collect() {
        this.reset();
        this.inc(self.#dropped);
      },
    });
  }

  recordStatus(status: number): void {
    this.#byStatus.set(status, (this.#byStatus.get(status) ?? 0) + 1);
  }

  recordTunnel(): void {
    this.#tunnels++;
  }

  recordUpstreamError(code: string): void {
    const key = ERROR_CODE.test(code) ? code : "other";
    this.#upstreamErrors.set(key, (this.#upstreamErrors.get(key) ?? 0) + 1);
  }

  recordClientAbort(): void {
    this.#clientAborts++;
  }

  recordDroppedConnection(): void {
    this.#dropped++;
  }

  /** The Prometheus text exposition of the numbers. */
  text(): Promise<string> {
    return this.registry.metrics();
  }

  snapshot(): ProxyMetricsSnapshot {
    const requestsByStatus: Record<string, number> = {};
    let requestsTotal = 0;
    for (const [status, count] of [...this.#byStatus].sort(([a], [b]) => a - b)) {
      requestsByStatus[String(status)] = count;
      requestsTotal += count;
    }
    return {
      requestsByStatus,
      requestsTotal,
      tunnelsTotal: this.#tunnels,
      activeConnections: this.active,
      upstreamErrors: Object.fromEntries(this.#upstreamErrors),
      clientAborts: this.#clientAborts,
      droppedConnections: this.#dropped,
    };
  }
}
