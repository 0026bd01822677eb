/**
 * Sandbox metrics history on the node: the sampler writes, the store keeps and answers
 * SandboxService.Metrics, and a sweep removes what is older than the retention.
 */
import type { Logger } from "@moat/shared";
import { MetricsSampler, type SampledSandbox } from "./sampler.js";
import { MetricsStore } from "./store.js";

export { InvalidMetricsQueryError, type MetricSample, type MetricsQuery, MetricsStore } from "./store.js";

export interface SandboxMetrics {
  readonly store: MetricsStore;
  close(): Promise<void>;
}

/** At most every 10 minutes, at least every 10 s, else a tenth of the retention. */
function sweepIntervalMs(retentionMs: number): number {
  return Math.min(10 * 60_000, Math.max(10_000, retentionMs / 10));
}

export async function startSandboxMetrics(options: {
  dataDir: string;
  sandboxes: () => readonly SampledSandbox[];
  intervalSeconds: number;
  retentionHours: number;
  logger: Logger;
}): Promise<SandboxMetrics> {
  const retentionMs = options.retentionHours * 3_600_000;
  const store = MetricsStore.forDataDir(options.dataDir, { retentionMs });
  const sweep = () =>
    store.sweep().catch((err: unknown) => options.logger.warn({ err }, "sweeping sandbox metrics failed"));
  await sweep();
  const sweeper = setInterval(sweep, sweepIntervalMs(retentionMs));
  sweeper.unref();
  const sampler = new MetricsSampler({
    store,
    sandboxes: options.sandboxes,
    intervalMs: options.intervalSeconds * 1000,
    logger: options.logger,
  });
  sampler.start();
  return {
    store,
    async close() {
      clearInterval(sweeper);
      await sampler.stop();
    },
  };
}
