/**
 * The node agent: sets up the node's network rules, adopts or reaps what a previous run left,
 * then serves orchestrator.SandboxService (gRPC and Connect over h2c).
 */
import { existsSync, readFileSync } from "node:fs";
import http2 from "node:http2";
import type { AddressInfo } from "node:net";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { connectNodeAdapter } from "@connectrpc/connect-node";
import { CleanupStack, type Logger, useSpawnHelper } from "@moat/shared";
import { SandboxService, TemplateService, VolumeService } from "@moat/shared/gen/orchestrator";
import { describeArtifactStore, openArtifactStore } from "./artifacts/open.js";
import { SharedArtifacts } from "./artifacts/shared.js";
import type { ArtifactStore } from "./artifacts/store.js";
import {
  checkMetricsInterval,
  checkNodeID,
  checkNodeToken,
  checkRetentionHours,
  type NodeConfig,
  readNodeConfig,
} from "./config.js";
import { acquireNodeLocks } from "./host/lock.js";
import { DnsResolver, hostUpstreams, type Upstream } from "./network/dns-resolver.js";
import type { EgressAllowEntry } from "./network/egress.js";
import { EgressRegistry } from "./network/egress-rules.js";
import { setupHostNetwork } from "./network/sandbox-network.js";
import { checkNamePrefix } from "./network/slot.js";
import { advertisedAddress, Heartbeat, httpURL } from "./node/heartbeat.js";
import { LoadSampler } from "./node/load.js";
import { Runsc } from "./runtime/runsc.js";
import { SandboxManager } from "./sandbox/manager.js";
import { ensureNodeToken, requireNodeToken } from "./server/node-token.js";
import { requestContext } from "./server/request-context.js";
import { sandboxService } from "./server/sandbox-service.js";
import { templateService } from "./server/template-service.js";
import { volumeService } from "./server/volume-service.js";
import { runscVersion } from "./setup/runsc-install.js";
import { snapshotKey } from "./snapshot/template-snapshot.js";
import { makeNodeDataPrivate } from "./storage/data-dir.js";
import { VolumeStore } from "./storage/volumes.js";
import { SandboxLogCollector } from "./telemetry/logs/collector.js";
import { SandboxLogStore } from "./telemetry/logs/store.js";
import { startSandboxMetrics } from "./telemetry/metrics/index.js";
import { NodeMetrics, serveNodeMetrics } from "./telemetry/prometheus.js";
import { TemplateBuilder } from "./template/build/builder.js";
import { type BuiltinTemplateResult, ensureCodeInterpreterTemplate } from "./template/code-interpreter.js";
import { RegistryAllowList } from "./template/oci/address-policy.js";
import type { TemplateStore } from "./template/store.js";

export interface OrchestratorOptions {
  dataDir: string;
  /** gRPC/Connect port; 0 picks a free one. */
  port: number;
  host: string;
  logger: Logger;
  runscBinary: string;
  platform: "systrap" | "ptrace";
  /** The node's templates: the base template and the builds made here. */
  templates: TemplateStore;
  /** The node's settings from the environment (default: readNodeConfig() at start); the options below override them one by one. */
  config?: NodeConfig;
  maxSandboxes?: number;
  /** Creates and resumes booting at once (default: MOAT_CREATE_CONCURRENCY, else twice the host's cores). */
  maxStarting?: number;
  pidsLimit?: number;
  /** Failure injection for tests; defaults to MOAT_FAULTS (`step=error|crash,…`). */
  faults?: ReadonlyMap<string, "error" | "crash">;
  /** Restore creates from template snapshots (default: on, MOAT_TEMPLATE_SNAPSHOTS=off disables). */
  templateSnapshots?: boolean;
  /** Warm pool size per template (default: MOAT_POOL_SIZE, else 2; 0 disables). */
  poolSize?: number;
  /** Networks made ahead of time (default: MOAT_NETWORK_POOL_SIZE, else 2; 0 disables). */
  networkPoolSize?: number;
  /**
   * Outbound connections one sandbox may have open at once (default:
   * MOAT_SANDBOX_MAX_CONNECTIONS, else DEFAULT_SANDBOX_CONNECTIONS).
   */
  maxConnectionsPerSandbox?: number;
  /** Templates whose snapshot and pool are prepared at start (default: base). */
  prepareTemplates?: string[];
  /**
   * Image registries allowed on loopback, private or link-local addresses (and plain HTTP with
   * `http://host:port`): hosts[:port] and CIDRs. Default: MOAT_REGISTRY_ALLOW (comma-separated),
   * else none: only public registries over https.
   */
  registryAllow?: readonly string[];
  /** Bytes an image may download and unpack to (default: MOAT_IMAGE_MAX_MB, else 10240 MiB). */
  imageMaxBytes?: number;
  /**
   * Destinations in the denied egress ranges (private, link-local, …) that sandboxes may reach
   * (default: MOAT_EGRESS_ALLOW, parsed by parseEgressAllow; empty).
   */
  egressAllow?: readonly EgressAllowEntry[];
  /**
   * Disk size of sandboxes whose create (or template) names none, in MiB (default:
   * MOAT_DISK_SIZE_MB, else 10240; 0: no limit).
   */
  diskSizeMB?: number;
  /** Resolvers the sandboxes' resolver forwards to (default: MOAT_DNS_UPSTREAM, else /etc/resolv.conf). */
  dnsUpstream?: readonly Upstream[];
  /**
   * The fleet's shared artifact storage (default: MOAT_ARTIFACTS opened, else none): builds and
   * named snapshots are published there and fetched from it on demand (artifacts/shared.ts).
   */
  artifacts?: ArtifactStore;
  /** What the node keeps of fetched artifacts, in MiB (default: MOAT_ARTIFACT_CACHE_MB, else 20480). */
  artifactCacheMB?: number;
  /**
   * Where others reach this node (its RPC and its proxy): default `host`, or for 0.0.0.0/:: the
   * first non-loopback IPv4 address.
   */
  advertiseAddress?: string;
  /**
   * The API the node registers with and heartbeats to every 2 s (PUT /internal/nodes/<nodeID>);
   * unset: no registration (the API lists the node statically).
   */
  apiURL?: string;
  /** Labels the node registers with (e.g. `build`), which placement may require. */
  labels?: readonly string[];
  /** The port of the node's proxy, advertised in the heartbeat (default 5007). */
  proxyPort?: number;
  /** The node's name in the fleet, logged and reported (default: MOAT_NODE_ID, else `local`). */
  nodeID?: string;
  /**
   * Prefix of the node's host-global names: named network namespaces and the host lock (default:
   * MOAT_NAME_PREFIX, else `moat-`). Nodes sharing a kernel each need their own, and each its own
   * network namespace (`nsenter --net=/run/netns/<host> moat orchestrator …`).
   */
  namePrefix?: string;
  /**
   * The token every RPC must carry (default: MOAT_NODE_TOKEN, else the node's own
   * `<data-dir>/node-token`, made on first start).
   */
  nodeToken?: string;
  /** Hours a sandbox's log is kept after its last line (default: MOAT_LOGS_RETENTION_HOURS, else 168). */
  logsRetentionHours?: number;
  /** MiB a sandbox's log may hold, its oldest entries dropped past it (default: MOAT_LOGS_MAX_MB, else 10). */
  logsMaxMB?: number;
  /** Seconds between samples of each running sandbox's metrics (default: MOAT_METRICS_INTERVAL, else 5; 0: off). */
  metricsIntervalSeconds?: number;
  /** Hours the samples are kept, also after the sandbox ends (default: MOAT_METRICS_RETENTION_HOURS, else 24). */
  metricsRetentionHours?: number;
  /**
   * Port of the node's Prometheus endpoint, GET /metrics over HTTP/1.1 on `host` (the RPC port
   * speaks h2c only, which Prometheus does not); 0 picks a free one. Served only with a metrics
   * token; unset: not served.
   */
  metricsPort?: number;
  /** Address of GET /metrics (default: `host`). */
  metricsHost?: string;
  /** Bearer token of GET /metrics (default: MOAT_METRICS_TOKEN); without one no port is opened. */
  metricsToken?: string;
}

export interface Orchestrator {
  readonly port: number;
  /** The node's name in the fleet. */
  readonly nodeID: string;
  /** Prefix of its host-global names. */
  readonly namePrefix: string;
  /** What every RPC must carry as `authorization: Bearer <token>` (kept in <data-dir>/node-token). */
  readonly nodeToken: string;
  readonly manager: SandboxManager;
  /** The port of GET /metrics; undefined when not served. */
  readonly metricsPort: number | undefined;
  /**
   * Builds the code-interpreter template when its current definition is not built yet (progress
   * through `onProgress`), makes creates of `code-interpreter-v1` use it, and prepares its
   * snapshot and warm pool in the background.
   */
  ensureCodeInterpreter(
    onProgress?: (message: string) => void,
    opts?: { prepare?: boolean },
  ): Promise<BuiltinTemplateResult>;
  /** Stops serving; running sandboxes stay up for the next orchestrator to adopt. */
  close(): Promise<void>;
}

/** Registers the node with the API and keeps it registered (node/heartbeat.ts). */
async function startHeartbeat(
  options: OrchestratorOptions,
  port: number,
  token: string,
  manager: SandboxManager,
): Promise<Heartbeat> {
  const address = advertisedAddress(options.host, options.advertiseAddress, os.networkInterfaces());
  const runsc = await runscVersion(options.runscBinary);
  let builds: { at: number; ids: string[] } | undefined;
  const heartbeat = new Heartbeat({
    apiURL: options.apiURL!,
    nodeID: options.nodeID ?? (process.env.MOAT_NODE_ID?.trim() || "local"),
    token,
    rpcURL: httpURL(address, port),
    proxyURL: httpURL(address, options.proxyPort ?? DEFAULT_NODE_PROXY_PORT),
    version: moatVersion(),
    runtime: runsc ? `runsc ${runsc.raw}` : "runsc",
    labels: [...(options.labels ?? [])],
    sampler: new LoadSampler(),
    counts: () => manager.loadCounts(),
    // The builds' manifests are files: read again every half minute, not every beat.
    builds: () => {
      if (!builds || Date.now() - builds.at > BUILDS_REFRESH_MS) {
        builds = { at: Date.now(), ids: options.templates.manifests().map((m) => m.buildID) };
      }
      return builds.ids;
    },
    logger: options.logger,
  });
  heartbeat.start();
  return heartbeat;
}

const DEFAULT_NODE_PROXY_PORT = 5007;

/** GET /metrics for the operator's Prometheus, when a port and a token are given. */
async function startMetricsServer(
  options: OrchestratorOptions,
  metrics: NodeMetrics,
  logger: Logger,
): Promise<{ port: number; close(): Promise<void> } | undefined> {
  const token = options.metricsToken ?? (process.env.MOAT_METRICS_TOKEN || undefined);
  if (options.metricsPort === undefined) return undefined;
  if (!token) {
    logger.info("no metrics token (MOAT_METRICS_TOKEN): the node's /metrics is not served");
    return undefined;
  }
  if (token.length < 16)
    throw new Error("the metrics token (MOAT_METRICS_TOKEN) must be at least 16 characters");
  try {
    return await serveNodeMetrics(metrics, {
      host: options.metricsHost ?? options.host,
      port: options.metricsPort,
      token,
      logger,
    });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== "EADDRINUSE") throw err;
    throw new Error(
      `the node's metrics port ${options.metricsPort} is in use: choose another with --metrics-port (moat up: --orchestrator-metrics-port)`,
    );
  }
}
const BUILDS_REFRESH_MS = 30_000;

/** moat's version (the orchestrator package's). */
function moatVersion(): string {
  try {
    const pkg = JSON.parse(
      readFileSync(path.join(APP_DIR, "packages", "orchestrator", "package.json"), "utf8"),
    );
    return typeof pkg.version === "string" ? pkg.version : "unknown";
  } catch {
    return "unknown";
  }
}

/** The moat checkout. */
export const APP_DIR = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../../..");
/** What sandboxes mount read-only for envd (scripts/bundle-envd.js makes it); nothing else of the checkout. */
export const ENVD_DIR = path.join(APP_DIR, "packages", "envd", "dist", "sandbox");

export async function startOrchestrator(options: OrchestratorOptions): Promise<Orchestrator> {
  // Before anything is set up: a malformed variable or option stops the start with its message.
  const config = options.config ?? readNodeConfig();
  const identity = {
    nodeID: options.nodeID !== undefined ? checkNodeID(options.nodeID) : config.nodeID,
    namePrefix: options.namePrefix !== undefined ? checkNamePrefix(options.namePrefix) : config.namePrefix,
    nodeToken: options.nodeToken !== undefined ? checkNodeToken(options.nodeToken) : config.nodeToken,
  };
  const locked = await acquireNodeLocks(identity.namePrefix);
  // The node's host commands (nft, ip, runsc…) are started by a small helper process: a fork of a
  // large process is slow (exec/spawn-helper.ts). Released with the node's locks.
  const releaseHelper = config.spawnHelper
    ? useSpawnHelper((why) =>
        options.logger.warn({ why }, "the spawn helper is gone; the node starts its commands itself"),
      )
    : () => undefined;
  const releaseLock = async () => {
    releaseHelper();
    await locked();
  };
  // What the start has set up by then, released if it fails later.
  const started = new CleanupStack();
  try {
    return await start({ ...options, ...identity, config }, releaseLock, started);
  } catch (err) {
    await started.run().catch(() => undefined);
    await releaseLock();
    throw err;
  }
}

async function start(
  options: OrchestratorOptions & { config: NodeConfig; nodeID: string; namePrefix: string },
  releaseLock: () => Promise<void>,
  started: CleanupStack,
): Promise<Orchestrator> {
  const { config, nodeID, namePrefix } = options;
  const logger = options.logger.child({ nodeID });
  if (!existsSync(path.join(ENVD_DIR, "envd.mjs"))) {
    throw new Error(`envd's sandbox directory ${ENVD_DIR} is missing or incomplete: run npm run build`);
  }
  const registryAllow =
    options.registryAllow !== undefined ? new RegistryAllowList(options.registryAllow) : config.registryAllow;
  if (registryAllow.size > 0)
    logger.info({ registryAllow: registryAllow.toString() }, "registries allowed on private addresses");
  const egressAllow = options.egressAllow ?? config.egressAllow;
  if (egressAllow.length > 0) {
    logger.info(
      { egressAllow: egressAllow.map((e) => (e.port ? `${e.cidr}:${e.port}` : e.cidr)) },
      "sandbox egress allowed beyond the public internet",
    );
  }
  await makeNodeDataPrivate(options.dataDir);
  await setupHostNetwork({ egressAllow });
  const egress = new EgressRegistry();
  const upstreams = options.dnsUpstream ?? config.dnsUpstream ?? (await hostUpstreams());
  if (upstreams.length === 0) {
    logger.warn(
      "no resolver in /etc/resolv.conf: names will not resolve in sandboxes; set MOAT_DNS_UPSTREAM (e.g. 10.0.0.2)",
    );
  }
  const resolver = new DnsResolver({ sandboxes: egress, upstreams, logger });
  await resolver.start();
  started.push("sandbox resolver", () => resolver.close());
  const nodeToken = options.nodeToken ?? (await ensureNodeToken(options.dataDir, logger));
  const runsc = new Runsc({
    binary: options.runscBinary,
    stateDir: path.join(options.dataDir, "runsc"),
    platform: options.platform,
  });
  const pidsLimit = options.pidsLimit ?? 1024;
  const snapshots = options.templateSnapshots ?? config.templateSnapshots;
  const artifacts =
    options.artifacts ?? (config.artifacts ? await openArtifactStore(config.artifacts) : undefined);
  const volumes = new VolumeStore({ dataDir: options.dataDir, logger, artifacts });
  const key = snapshots
    ? await snapshotKey({
        runscBinary: options.runscBinary,
        nodeBinary: process.execPath,
        envdDir: ENVD_DIR,
        pidsLimit,
        // Shared snapshots: the same key on every node of the same runtime, wherever it keeps it.
        portable: artifacts !== undefined,
      })
    : undefined;
  let shared: SharedArtifacts | undefined;
  if (artifacts) {
    shared = new SharedArtifacts({
      store: artifacts,
      templates: options.templates,
      dataDir: options.dataDir,
      snapshotKey: key,
      cacheBytes: (options.artifactCacheMB ?? config.artifactCacheMB) * 2 ** 20,
      logger,
    });
    await shared.load();
    logger.info(
      {
        artifacts: describeArtifactStore(artifacts),
        cacheMB: options.artifactCacheMB ?? config.artifactCacheMB,
      },
      "shared artifacts",
    );
  }
  const manager = new SandboxManager({
    dataDir: options.dataDir,
    runsc,
    templates: options.templates,
    nodeBinary: process.execPath,
    envdDir: ENVD_DIR,
    logger,
    maxSandboxes: options.maxSandboxes ?? 1000,
    maxStarting: options.maxStarting ?? config.createConcurrency,
    maxQueued: config.createQueueMax,
    queueTimeoutMs: config.createQueueTimeoutMs,
    pidsLimit,
    envdReadyTimeoutMs: 20_000,
    faults: options.faults ?? config.faults,
    snapshotKey: key,
    shared,
    poolSize: options.poolSize ?? config.poolSize,
    poolMaxSize: config.poolMaxSize,
    poolIdleMs: config.poolIdleMs,
    networkPoolSize: options.networkPoolSize ?? config.networkPoolSize,
    diskSizeMB: options.diskSizeMB ?? config.diskSizeMB,
    maxConnectionsPerSandbox: options.maxConnectionsPerSandbox ?? config.maxConnectionsPerSandbox,
    egress,
    volumes,
    artifacts,
    namePrefix,
  });
  const nodeMetrics = new NodeMetrics({ manager, dataDir: options.dataDir });
  manager.observe = nodeMetrics.observe;
  await manager.reclaim();
  const sandboxLogs = new SandboxLogStore({
    dataDir: options.dataDir,
    retentionHours: options.logsRetentionHours ?? config.logsRetentionHours,
    maxBytes: (options.logsMaxMB ?? config.logsMaxMB) * 2 ** 20,
    maxTotalBytes: config.logsTotalMB * 2 ** 20,
    logger,
    isLive: (sandboxID) => {
      try {
        manager.get(sandboxID);
        return true;
      } catch {
        return false;
      }
    },
  });
  await sandboxLogs.start();
  started.push("sandbox logs", () => sandboxLogs.stop());
  const logCollector = new SandboxLogCollector({
    store: sandboxLogs,
    sandboxes: () => manager.list().map((s) => ({ id: s.id, dir: s.dir })),
    logger,
  });
  logCollector.start();
  started.push("sandbox log collector", () => logCollector.stop());
  manager.beforeRelease = async (sandbox) => {
    await logCollector.collect(sandbox.id, sandbox.dir);
    logCollector.forget(sandbox.id);
  };
  await options.templates.sweep();
  // In the background: creates boot cold until a template's snapshot is there.
  for (const templateID of options.prepareTemplates ?? ["base"]) {
    manager.prepareTemplate(templateID).then(
      (snapshot) => logger.info({ templateID, snapshot: snapshot?.image }, "template prepared"),
      (err: unknown) =>
        logger.error({ err, templateID }, "preparing the template snapshot failed; cold starts"),
    );
  }

  const builder = new TemplateBuilder({
    manager,
    store: options.templates,
    dataDir: options.dataDir,
    logger,
    registryAllow,
    imageMaxBytes: options.imageMaxBytes ?? config.imageMaxBytes,
    shared,
  });
  builder.observe = nodeMetrics.observe;
  // Layers of deleted templates that sandboxes were still on go when the last of those does.
  const prune = () =>
    builder.pruneLayers().catch((err: unknown) => logger.warn({ err }, "pruning template layers failed"));
  await prune();
  manager.onBuildRemoved = async (buildID) => {
    const layers = options.templates.readManifest(buildID)?.layers ?? [];
    await options.templates.deleteBuild(buildID);
    await builder.pruneLayers(layers);
  };
  // Fetched builds and snapshots past the cache's bound (it may have been lowered) go now.
  await shared?.cache.evict();
  manager.subscribe((event) => {
    if (event.type === "killed" || event.type === "expired" || event.type === "failed") void prune();
  });
  // A killed sandbox's root stays mounted on its layers until its release in the background ends.
  manager.afterRelease = prune;
  const metrics = await startSandboxMetrics({
    dataDir: options.dataDir,
    sandboxes: () => manager.list(),
    intervalSeconds:
      options.metricsIntervalSeconds !== undefined
        ? checkMetricsInterval(options.metricsIntervalSeconds)
        : config.metricsIntervalSeconds,
    retentionHours:
      options.metricsRetentionHours !== undefined
        ? checkRetentionHours(options.metricsRetentionHours)
        : config.metricsRetentionHours,
    logger,
  });
  started.push("sandbox metrics", () => metrics.close());
  const server = http2.createServer(
    connectNodeAdapter({
      routes: (router) => {
        router.service(SandboxService, sandboxService(manager, sandboxLogs, metrics.store));
        router.service(TemplateService, templateService(builder, options.templates, manager, shared));
        router.service(VolumeService, volumeService(volumes, manager));
      },
      interceptors: [requireNodeToken(nodeToken), requestContext()],
    }),
  );
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(options.port, options.host, () => {
      server.off("error", reject);
      resolve();
    });
  });
  const port = (server.address() as AddressInfo).port;
  started.push("RPC server", () => new Promise<void>((resolve) => server.close(() => resolve())));
  const metricsServer = await startMetricsServer(options, nodeMetrics, logger);
  if (metricsServer) started.push("metrics server", () => metricsServer.close());
  logger.info(
    { port, metricsPort: metricsServer?.port, dataDir: options.dataDir, namePrefix },
    "orchestrator listening",
  );
  const heartbeat = options.apiURL ? await startHeartbeat(options, port, nodeToken, manager) : undefined;
  return {
    port,
    nodeID,
    namePrefix,
    nodeToken,
    manager,
    metricsPort: metricsServer?.port,
    async ensureCodeInterpreter(onProgress, opts = {}) {
      const result = await ensureCodeInterpreterTemplate({
        builder,
        store: options.templates,
        manager,
        logger,
        onProgress,
      });
      const { templateID } = result;
      if (opts.prepare === false) return result;
      manager.prepareTemplate(templateID).then(
        (snapshot) => logger.info({ templateID, snapshot: snapshot?.image }, "template prepared"),
        (err: unknown) =>
          logger.error({ err, templateID }, "preparing the template snapshot failed; cold starts"),
      );
      return result;
    },
    async close() {
      await heartbeat?.stop();
      await metrics.close();
      await metricsServer?.close();
      await manager.close();
      await logCollector.stop();
      sandboxLogs.stop();
      await resolver.close();
      await new Promise<void>((resolve) => {
        server.close(() => resolve());
        // Open streams (WatchEvents) would hold close() forever.
        setTimeout(resolve, 1000).unref();
      });
      await volumes.close();
      await releaseLock();
    },
  };
}
