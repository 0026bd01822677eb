/**
 * Samples every running sandbox every interval into the node's MetricsStore: memory and disk from
 * its envd `/metrics` (the sandbox's own view), CPU use from its host cgroup (gVisor shows the
 * sandbox no CPU counters). What a sandbox answers is its own to choose: the read is bounded in
 * time and size, only the known numeric fields are kept (clamped), and the sample is stamped with
 * the node's clock, never the sandbox's.
 */
import http from "node:http";
import { ENVD_PORT, type Logger } from "@moat/shared";
import { cgroupCpuNs, cpuPercentBetween } from "./cgroup-cpu.js";
import type { MetricSample, MetricsStore } from "./store.js";

/** What the sampler needs of a sandbox (sandbox/sandbox.ts). */
export interface SampledSandbox {
  readonly id: string;
  readonly state: string;
  readonly kind: string;
  readonly hostAddress: string;
  readonly record: { teamID: string; envdAccessToken?: string; lifecycleID: string; vcpu: number };
}

export interface MetricsSamplerOptions {
  store: MetricsStore;
  /** The node's sandboxes now (SandboxManager.list). */
  sandboxes: () => readonly SampledSandbox[];
  intervalMs: number;
  logger: Logger;
  /** envd's port (tests point it elsewhere). */
  port?: number;
  /** Sandboxes read at once. */
  concurrency?: number;
  /** The host's cgroup root (tests point it elsewhere). */
  cgroupRoot?: string;
}

/** envd's body is about 250 bytes; anything past this is not metrics. */
export const MAX_METRICS_BODY_BYTES = 4096;
const READ_TIMEOUT_MS = 2_000;

export class MetricsSampler {
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<void> | undefined;
  private readonly failing = new Set<string>();
  /** The last CPU reading of each sandbox's current container (a resume makes a new one). */
  private readonly cpu = new Map<string, { containerID: string; cpuNs: number; atNs: number }>();

  constructor(private readonly options: MetricsSamplerOptions) {}

  start(): void {
    if (this.timer || this.options.intervalMs <= 0) return;
    this.timer = setInterval(() => {
      // A tick still under way (slow sandboxes) is not doubled: this one is skipped.
      this.running ??= this.tick().finally(() => {
        this.running = undefined;
      });
    }, this.options.intervalMs);
    this.timer.unref();
  }

  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    await this.running;
  }

  /** Reads every running user sandbox once and appends what answered. */
  async tick(): Promise<void> {
    const targets = this.options.sandboxes().filter(
      // Paused sandboxes have no envd to ask; pool, build and snapshot sandboxes are nobody's yet.
      (s) => s.state === "running" && s.kind === "user" && s.hostAddress !== "",
    );
    const ids = new Set(targets.map((s) => s.id));
    for (const id of this.failing) if (!ids.has(id)) this.failing.delete(id);
    for (const id of this.cpu.keys()) if (!ids.has(id)) this.cpu.delete(id);
    // Stamped with the tick's start, not each answer's arrival: ticks are an interval apart, while
    // a slow answer followed by a fast one could land two samples in the same second.
    const time = Math.floor(Date.now() / 1000);
    const queue = [...targets];
    const workers = Array.from(
      { length: Math.min(queue.length, this.options.concurrency ?? 16) },
      async () => {
        for (let s = queue.shift(); s; s = queue.shift()) await this.sample(s, time);
      },
    );
    await Promise.all(workers);
  }

  private async sample(sandbox: SampledSandbox, time: number): Promise<void> {
    const cpuUsedPct = await this.cpuPercent(sandbox);
    const timeoutMs = Math.min(READ_TIMEOUT_MS, Math.max(200, this.options.intervalMs - 100));
    const body = await readEnvdMetrics(sandbox.hostAddress, {
      port: this.options.port ?? ENVD_PORT,
      token: sandbox.record.envdAccessToken,
      timeoutMs,
    });
    if (!body) {
      // Said once per sandbox until it answers again, not every interval.
      if (!this.failing.has(sandbox.id)) {
        this.failing.add(sandbox.id);
        this.options.logger.debug(
          { sandboxID: sandbox.id },
          "sandbox metrics unreadable; retried each interval",
        );
      }
      return;
    }
    this.failing.delete(sandbox.id);
    const sample = { ...toSample(body, time), cpuUsedPct };
    await this.options.store.append(sandbox.id, sandbox.record.teamID, sample).catch((err: unknown) => {
      this.options.logger.warn({ err, sandboxID: sandbox.id }, "writing sandbox metrics failed");
    });
  }

  /** Percent of its vCPUs busy since the last sample, from the host cgroup; 0 for a container's first. */
  private async cpuPercent(sandbox: SampledSandbox): Promise<number> {
    const containerID = sandbox.record.lifecycleID;
    const cpuNs = await cgroupCpuNs(containerID, this.options.cgroupRoot);
    if (cpuNs === undefined) return 0;
    const now = { containerID, cpuNs, atNs: Number(process.hrtime.bigint()) };
    const last = this.cpu.get(sandbox.id);
    this.cpu.set(sandbox.id, now);
    return last?.containerID === containerID ? cpuPercentBetween(last, now, sandbox.record.vcpu) : 0;
  }
}

/** envd's body (snake_case, as E2B's envd); only these fields are read. */
export function toSample(body: unknown, time: number): MetricSample {
  const m = (typeof body === "object" && body !== null ? body : {}) as Record<string, unknown>;
  return {
    time,
    cpuCount: num(m.cpu_count),
    cpuUsedPct: num(m.cpu_used_pct),
    memUsed: num(m.mem_used),
    memTotal: num(m.mem_total),
    memCache: num(m.mem_cache),
    diskUsed: num(m.disk_used),
    diskTotal: num(m.disk_total),
  };
}

function num(value: unknown): number {
  return typeof value === "number" && Number.isFinite(value) && value > 0 ? value : 0;
}

/**
 * GET /metrics from envd, parsed; undefined when it does not answer 200 with a JSON object
 * within `timeoutMs` and MAX_METRICS_BODY_BYTES.
 */
export function readEnvdMetrics(
  host: string,
  options: { port: number; token?: string; timeoutMs: number },
): Promise<unknown> {
  return new Promise((resolve) => {
    let done = false;
    const finish = (value: unknown) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      req.destroy();
      resolve(value);
    };
    const req = http.get(
      {
        host,
        port: options.port,
        path: "/metrics",
        headers: options.token ? { "X-Access-Token": options.token } : {},
        agent: false,
      },
      (res) => {
        if (res.statusCode !== 200) return finish(undefined);
        const chunks: Buffer[] = [];
        let size = 0;
        res.on("data", (chunk: Buffer) => {
          size += chunk.length;
          if (size > MAX_METRICS_BODY_BYTES) return finish(undefined);
          chunks.push(chunk);
        });
        res.on("end", () => {
          try {
            const parsed: unknown = JSON.parse(Buffer.concat(chunks).toString("utf8"));
            finish(
              typeof parsed === "object" && parsed !== null && !Array.isArray(parsed) ? parsed : undefined,
            );
          } catch {
            finish(undefined);
          }
        });
        res.on("error", () => finish(undefined));
      },
    );
    req.on("error", () => finish(undefined));
    const timer = setTimeout(() => finish(undefined), options.timeoutMs);
  });
}
