/**
 * The node's Prometheus metrics (GET /metrics on its metrics port, with the metrics token):
 * sandboxes by state, operation durations, the warm pool, the host's CPU, memory and disk, and
 * each live sandbox's CPU and memory read from its host cgroup at scrape time. Labels stay
 * bounded: states, operation kinds and the ids of sandboxes on the node now (gone when they
 * end); never team names, template ids or paths.
 */
import { createHash, timingSafeEqual } from "node:crypto";
import { readFile, statfs } from "node:fs/promises";
import http from "node:http";
import type { AddressInfo } from "node:net";
import os from "node:os";
import type { Logger } from "@moat/shared";
import { Counter, Gauge, Histogram, Registry } from "prom-client";
import { parseMeminfo, parseProcStat } from "../node/load.js";
import type { SandboxManager } from "../sandbox/manager.js";
import type { SandboxState } from "../sandbox/sandbox.js";
import { cgroupCpuNs } from "./metrics/cgroup-cpu.js";

/** What the manager and builder time; each is a histogram of its own. */
export type Operation = "create" | "pause" | "resume" | "restore" | "fork" | "build" | "kill" | "snapshot";

/** Told when an operation ends, with its duration and its few labels. */
export type OperationObserver = (
  operation: Operation,
  seconds: number,
  labels?: Record<string, string>,
) => void;

const STATES: readonly SandboxState[] = [
  "starting",
  "running",
  "pausing",
  "paused",
  "resuming",
  "snapshotting",
  "stopping",
];

/** The labels each operation carries (values from fixed sets: start kinds, outcomes). */
const OPERATIONS: Record<Operation, { help: string; labels: string[] }> = {
  create: {
    help: "Sandbox creates that succeeded, by how they started (pool, snapshot, cold)",
    labels: ["start"],
  },
  pause: { help: "Sandbox pauses", labels: [] },
  resume: {
    help: "Sandbox resumes that succeeded, by what they resumed from (memory, files)",
    labels: ["from"],
  },
  restore: {
    help: "Restores of a memory image by runsc, by what asked for it (create from a snapshot, resume)",
    labels: ["for"],
  },
  fork: { help: "Sandbox forks (one snapshot and the creates from it)", labels: [] },
  build: { help: "Template builds, by outcome (ok, failed)", labels: ["outcome"] },
  kill: { help: "Sandbox kills and expiries", labels: [] },
  snapshot: { help: "Sandbox snapshots that succeeded", labels: [] },
};

/** From a warm pool claim (milliseconds) to a build (minutes). */
const BUCKETS = [0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800];
/** /proc/stat counts in USER_HZ, 100 on Linux. */
const USER_HZ = 100;

export interface NodeMetricsOptions {
  manager: SandboxManager;
  dataDir: string;
  /** Where the host's cgroup file systems are mounted (tests point elsewhere). */
  cgroupRoot?: string;
  proc?: string;
}

export class NodeMetrics {
  readonly registry = new Registry();
  private readonly histograms = new Map<Operation, Histogram<string>>();

  constructor(private readonly options: NodeMetricsOptions) {
    const registers = [this.registry];
    const { manager } = options;
    for (const [operation, { help, labels }] of Object.entries(OPERATIONS) as [
      Operation,
      (typeof OPERATIONS)[Operation],
    ][]) {
      this.histograms.set(
        operation,
        new Histogram({
          name: `moat_orchestrator_${operation}_duration_seconds`,
          help: `${help}: how long they took`,
          labelNames: labels,
          buckets: BUCKETS,
          registers,
        }),
      );
    }
    const events = new Counter({
      name: "moat_orchestrator_sandbox_events_total",
      help: "Sandbox lifecycle events on this node, by type (created, failed, paused, resumed, killed, expired)",
      labelNames: ["type"],
      registers,
    });
    manager.subscribe((event) => events.inc({ type: event.type }));
    new Gauge({
      name: "moat_orchestrator_sandboxes",
      help: "Sandboxes on this node, by state (warm pool entries not included)",
      labelNames: ["state"],
      registers,
      collect() {
        const counts = new Map<string, number>(STATES.map((s) => [s, 0]));
        for (const sandbox of manager.list()) counts.set(sandbox.state, (counts.get(sandbox.state) ?? 0) + 1);
        this.reset();
        for (const [state, count] of counts) this.set({ state }, count);
      },
    });
    new Gauge({
      name: "moat_orchestrator_warm_pool_ready",
      help: "Warm pool entries ready to be claimed, over all templates",
      registers,
      collect() {
        this.set(manager.pool.entries().length);
      },
    });
    new Gauge({
      name: "moat_orchestrator_warm_pool_target",
      help: "Warm pool entries wanted, over all templates with a pool",
      registers,
      collect() {
        this.set(manager.pool.target());
      },
    });
    new Gauge({
      name: "moat_orchestrator_create_queue",
      help: "Creates and resumes booting now (booting) and waiting for their turn (waiting)",
      labelNames: ["state"],
      registers,
      collect() {
        this.set({ state: "booting" }, manager.queue.active);
        this.set({ state: "waiting" }, manager.queue.waiting);
      },
    });
    this.nodeGauges(registers);
    this.sandboxGauges(registers);
  }

  /** The manager's and builder's hook. */
  readonly observe: OperationObserver = (operation, seconds, labels = {}) => {
    this.histograms.get(operation)?.observe(labels, seconds);
  };

  text(): Promise<string> {
    return this.registry.metrics();
  }

  private nodeGauges(registers: Registry[]): void {
    const proc = this.options.proc ?? "/proc";
    const { dataDir } = this.options;
    new Counter({
      name: "moat_node_cpu_seconds_total",
      help: "CPU time of the host since boot, over all CPUs, by mode (busy, idle; iowait counts as idle)",
      labelNames: ["mode"],
      registers,
      async collect() {
        const times = parseProcStat(await readFile(`${proc}/stat`, "utf8").catch(() => ""));
        this.reset();
        if (!times) return;
        this.inc({ mode: "busy" }, times.busy / USER_HZ);
        this.inc({ mode: "idle" }, (times.total - times.busy) / USER_HZ);
      },
    });
    new Gauge({
      name: "moat_node_cpus",
      help: "CPUs of the host",
      registers,
      collect() {
        this.set(os.availableParallelism());
      },
    });
    new Gauge({
      name: "moat_node_memory_bytes",
      help: "Memory of the host: total, and used (total less available)",
      labelNames: ["kind"],
      registers,
      async collect() {
        const memory = parseMeminfo(await readFile(`${proc}/meminfo`, "utf8").catch(() => ""));
        this.reset();
        if (!memory) return;
        this.set({ kind: "total" }, memory.totalMB * 2 ** 20);
        this.set({ kind: "used" }, memory.usedMB * 2 ** 20);
      },
    });
    new Gauge({
      name: "moat_node_disk_bytes",
      help: "The file system of the node's data directory: total, and available to moat",
      labelNames: ["kind"],
      registers,
      async collect() {
        this.reset();
        const fs = await statfs(dataDir).catch(() => undefined);
        if (!fs) return;
        this.set({ kind: "total" }, fs.blocks * fs.bsize);
        this.set({ kind: "available" }, fs.bavail * fs.bsize);
      },
    });
  }

  private sandboxGauges(registers: Registry[]): void {
    const { manager } = this.options;
    const root = this.options.cgroupRoot ?? "/sys/fs/cgroup";
    // One read of the cgroups per scrape, shared by both families.
    let reading: Promise<SandboxUsage[]> | undefined;
    const usage = () => {
      reading ??= readSandboxUsage(manager, root).finally(() => {
        setImmediate(() => {
          reading = undefined;
        });
      });
      return reading;
    };
    new Counter({
      name: "moat_sandbox_cpu_seconds_total",
      help: "CPU time of each running sandbox (its gVisor sandbox's host cgroup)",
      labelNames: ["sandbox_id"],
      registers,
      async collect() {
        this.reset();
        for (const u of await usage())
          if (u.cpuSeconds !== undefined) this.inc({ sandbox_id: u.sandboxID }, u.cpuSeconds);
      },
    });
    new Gauge({
      name: "moat_sandbox_memory_bytes",
      help: "Memory charged to each running sandbox's host cgroup (its gVisor sandbox, page cache included)",
      labelNames: ["sandbox_id"],
      registers,
      async collect() {
        this.reset();
        for (const u of await usage())
          if (u.memoryBytes !== undefined) this.set({ sandbox_id: u.sandboxID }, u.memoryBytes);
      },
    });
  }
}

interface SandboxUsage {
  sandboxID: string;
  cpuSeconds?: number;
  memoryBytes?: number;
}

/** Running sandboxes only: a paused one has no cgroup, a pool entry is nobody's yet. */
async function readSandboxUsage(manager: SandboxManager, root: string): Promise<SandboxUsage[]> {
  const running = manager.list().filter((s) => s.state === "running" || s.state === "snapshotting");
  return Promise.all(
    running.map(async (s) => ({ sandboxID: s.id, ...(await readCgroupUsage(root, s.record.lifecycleID)) })),
  );
}

/**
 * CPU seconds and memory bytes of the cgroup runsc makes at /moat/<container id>: cgroup v2
 * (cpu.stat usage_usec, memory.current) or v1 (cpuacct.usage in ns, memory.usage_in_bytes).
 * A cgroup that is not there (the sandbox just went) gives nothing.
 */
export async function readCgroupUsage(
  root: string,
  containerID: string,
): Promise<{ cpuSeconds?: number; memoryBytes?: number }> {
  // The id names a directory: nothing but what runsc container ids are made of.
  if (!/^[A-Za-z0-9_.-]{1,128}$/.test(containerID) || containerID.startsWith(".")) return {};
  const read = (file: string) => readFile(`${root}/${file}`, "utf8").catch(() => undefined);
  // CPU as the metrics history reads it (one parser of cpu.stat and cpuacct.usage).
  const [cpuNs, current, usage] = await Promise.all([
    cgroupCpuNs(containerID, root),
    read(`moat/${containerID}/memory.current`),
    read(`memory/moat/${containerID}/memory.usage_in_bytes`),
  ]);
  const number = (text: string | undefined) => {
    const n = Number(text?.trim());
    return text !== undefined && Number.isFinite(n) && n >= 0 ? n : undefined;
  };
  return {
    cpuSeconds: cpuNs !== undefined && cpuNs >= 0 ? cpuNs / 1e9 : undefined,
    memoryBytes: number(current) ?? number(usage),
  };
}

/** Serves GET /metrics over HTTP/1.1 (Prometheus does not speak h2c) for whoever holds the token. */
export async function serveNodeMetrics(
  metrics: NodeMetrics,
  options: { host: string; port: number; token: string; logger: Logger },
): Promise<{ port: number; close(): Promise<void> }> {
  const expected = digest(`Bearer ${options.token}`);
  const server = http.createServer((req, res) => {
    const answer = (status: number, message: string) => {
      const body = JSON.stringify({ code: status, message });
      res.writeHead(status, { "content-type": "application/json; charset=utf-8" }).end(body);
    };
    const path = (req.url ?? "/").split("?")[0];
    if (path !== "/metrics") return answer(404, "only GET /metrics is served here");
    if (req.method !== "GET") return answer(405, "use GET /metrics");
    const presented = req.headers.authorization;
    if (presented === undefined || !timingSafeEqual(digest(presented), expected)) {
      return answer(
        401,
        "/metrics needs Authorization: Bearer <token> with the metrics token (MOAT_METRICS_TOKEN)",
      );
    }
    metrics.text().then(
      (text) => res.writeHead(200, { "content-type": metrics.registry.contentType }).end(text),
      (err: unknown) => {
        options.logger.warn({ err }, "collecting the node's metrics failed");
        answer(500, "collecting the metrics failed; see the orchestrator's log");
      },
    );
  });
  // Scrapers keep nothing open for long: a stuck client holds no socket.
  server.requestTimeout = 10_000;
  server.headersTimeout = 10_000;
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(options.port, options.host, () => {
      server.off("error", reject);
      resolve();
    });
  });
  return {
    port: (server.address() as AddressInfo).port,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

// Digests have one length whatever was sent, as timingSafeEqual needs.
function digest(value: string): Buffer {
  return createHash("sha256").update(value).digest();
}
