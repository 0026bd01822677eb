/** A few counters, enough to see what the edge answers: requests by status, tunnels, failures. */

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

export class ProxyMetrics {
  readonly #byStatus = new Map<number, number>();
  readonly #upstreamErrors = new Map<string, number>();
  #tunnels = 0;
  #clientAborts = 0;
  #dropped = 0;
  active = 0;

  recordStatus(status: number): void {
    this.#byStatus.set(status, (this.#byStatus.get(status) ?? 0) + 1);
  }

  recordTunnel(): void {
    this.#tunnels++;
  }

  recordUpstreamError(code: string): void {
    this.#upstreamErrors.set(code, (this.#upstreamErrors.get(code) ?? 0) + 1);
  }

  recordClientAbort(): void {
    this.#clientAborts++;
  }

  recordDroppedConnection(): void {
    this.#dropped++;
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
