/**
 * The node agent's settings from the environment, each parsed here once: `readNodeConfig` turns
 * the `MOAT_*` variables into typed values with their defaults, and nothing else in the node reads
 * `process.env` for them. `startOrchestrator` reads it at start unless given one; its options
 * override single values. What only `moat setup` and `moat doctor` read is in setup/config.ts.
 *
 * Not read here: MOAT_LOG_LEVEL (the logger's, from @moat/shared; oci-spec.ts sets it for envd
 * inside sandboxes) and MOAT_CODE_INTERPRETER (the CLI's). MOAT_IMAGE_MAX_MB reaches the layer
 * process (template/oci/layer-child.ts) as `maxBytes` in its job argument, not through its
 * environment.
 */
import { availableParallelism } from "node:os";
import { DEFAULT_ARTIFACT_CACHE_MB } from "./artifacts/cache.js";
import { parseArtifactLocation } from "./artifacts/open.js";
import { parseUpstreams, type Upstream } from "./network/dns-resolver.js";
import { type EgressAllowEntry, parseEgressAllow } from "./network/egress.js";
import { DEFAULT_SANDBOX_CONNECTIONS } from "./network/sandbox-network.js";
import { checkNamePrefix, NAME_PREFIX } from "./network/slot.js";
import { DEFAULT_MAX_QUEUED, DEFAULT_QUEUE_TIMEOUT_MS } from "./sandbox/create-queue.js";
import { POOL_IDLE_MS } from "./sandbox/warm-pool.js";
import { MAX_DISK_SIZE_MB, MIN_DISK_SIZE_MB } from "./storage/disk.js";
import {
  DEFAULT_LOGS_MAX_MB,
  DEFAULT_LOGS_RETENTION_HOURS,
  DEFAULT_LOGS_TOTAL_MB,
} from "./telemetry/logs/store.js";
import { RegistryAllowList } from "./template/oci/address-policy.js";
import { DEFAULT_IMAGE_MAX_BYTES } from "./template/oci/layers.js";

export type Env = Readonly<Record<string, string | undefined>>;

/** Ready sandboxes a template's pool may grow to after bursts (about 2 GiB of idle sandboxes). */
const DEFAULT_POOL_MAX = 64;
/**
 * Boots at once: a restore waits on the disk and on envd for part of its time, so two per core
 * keep the cores busy without the pile-up of many at once.
 */
const DEFAULT_CREATE_CONCURRENCY = 2 * availableParallelism();

export interface NodeConfig {
  /** MOAT_DATA_DIR: where moat keeps runsc, templates and sandboxes (default /var/lib/moat). */
  dataDir: string;
  /** MOAT_FAULTS: failure injection for tests, `step=error|crash,…` (default: none). */
  faults: ReadonlyMap<string, "error" | "crash">;
  /** MOAT_TEMPLATE_SNAPSHOTS: `off` boots every create cold instead of restoring (default on). */
  templateSnapshots: boolean;
  /** MOAT_SPAWN_HELPER: `off` makes the node start its host commands itself (default on: exec/spawn-helper.ts). */
  spawnHelper: boolean;
  /** MOAT_POOL_SIZE: ready sandboxes kept per template (default 2; 0 disables the pool). */
  poolSize: number;
  /** MOAT_POOL_MAX: the most a template's pool grows to under bursts of creates (default 64; ≤ MOAT_POOL_SIZE: no growth). */
  poolMaxSize: number;
  /** MOAT_POOL_IDLE_SECONDS: a grown pool shrinks back to MOAT_POOL_SIZE after this long without a burst (default 300). */
  poolIdleMs: number;
  /** MOAT_CREATE_CONCURRENCY: creates and resumes booting at once, the rest queue (default: twice the host's cores). */
  createConcurrency: number;
  /** MOAT_CREATE_QUEUE_MAX: creates and resumes waiting for a turn at most; more get 429 (default 256). */
  createQueueMax: number;
  /** MOAT_CREATE_QUEUE_TIMEOUT_SECONDS: how long one waits for its turn before it fails (default 45). */
  createQueueTimeoutMs: number;
  /** MOAT_NETWORK_POOL_SIZE: sandbox networks made ahead of time (default 2; 0 disables). */
  networkPoolSize: number;
  /** MOAT_SANDBOX_MAX_CONNECTIONS: outbound connections one sandbox may have open (default 8192; 0: no cap). */
  maxConnectionsPerSandbox: number;
  /** MOAT_REGISTRY_ALLOW: registries allowed on non-public addresses, comma-separated (default: none). */
  registryAllow: RegistryAllowList;
  /** MOAT_IMAGE_MAX_MB: what an image may download and unpack to, here in bytes (default 10240 MiB). */
  imageMaxBytes: number;
  /** MOAT_EGRESS_ALLOW: denied destinations sandboxes may reach all the same (default: none). */
  egressAllow: readonly EgressAllowEntry[];
  /** MOAT_DISK_SIZE_MB: disk of sandboxes whose create or template names none (default 10240; 0: no limit). */
  diskSizeMB: number;
  /**
   * MOAT_DNS_UPSTREAM: the resolvers the sandboxes' resolver forwards to, comma-separated
   * `address[:port]` (default: undefined, the host's /etc/resolv.conf).
   */
  dnsUpstream: readonly Upstream[] | undefined;
  /**
   * MOAT_ARTIFACTS: the fleet's shared artifact storage, a directory (a shared mount) or
   * `s3://bucket/prefix` (default: undefined, nothing shared). Opened by artifacts/open.ts.
   */
  artifacts: string | undefined;
  /** MOAT_ARTIFACT_CACHE_MB: what the node keeps of fetched artifacts, in MiB (default 20480). */
  artifactCacheMB: number;
  /** MOAT_NODE_ID: the node's name in the fleet, logged and reported (default `local`). */
  nodeID: string;
  /**
   * MOAT_NAME_PREFIX: prefix of the node's host-global names (named network namespaces, host
   * lock), so that several nodes share one kernel (default `moat-`).
   */
  namePrefix: string;
  /**
   * MOAT_NODE_TOKEN: the token every RPC must carry, set alike on every component at deploy time
   * (≥ 32 printable characters); unset, the node's own `<data-dir>/node-token`.
   */
  nodeToken: string | undefined;
  /** MOAT_LOGS_RETENTION_HOURS: hours a sandbox's log is kept after its last line (default 168). */
  logsRetentionHours: number;
  /** MOAT_LOGS_MAX_MB: MiB one sandbox's log may hold, its oldest entries dropped past it (default 10). */
  logsMaxMB: number;
  /** MOAT_LOGS_TOTAL_MB: MiB all sandbox logs may hold; the least recently written of ended sandboxes go first (default 10240). */
  logsTotalMB: number;
  /** MOAT_METRICS_INTERVAL: seconds between samples of each running sandbox's metrics (default 5; 0: off). */
  metricsIntervalSeconds: number;
  /** MOAT_METRICS_RETENTION_HOURS: how long the samples are kept, also after the sandbox ends (default 24). */
  metricsRetentionHours: number;
}

export const DEFAULT_METRICS_INTERVAL_SECONDS = 5;
export const DEFAULT_METRICS_RETENTION_HOURS = 24;

export const DEFAULT_NODE_ID = "local";
const NODE_ID_PATTERN = /^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/;
const NODE_TOKEN_PATTERN = /^[\x21-\x7e]{32,}$/;

export const DEFAULT_DATA_DIR = "/var/lib/moat";

/** E2B's sandboxes get 10 GB of disk by default; here it bounds the writable layer. */
export const DEFAULT_DISK_SIZE_MB = 10 * 1024;

/**
 * Parses the node's variables from `env`. Every malformed one is reported: one alone throws its
 * own error (its message names the variable and what it accepts), several throw one error
 * listing them all.
 */
export function readNodeConfig(env: Env = process.env): NodeConfig {
  const errors: unknown[] = [];
  const parse = <T>(read: () => T, fallback: T): T => {
    try {
      return read();
    } catch (err) {
      errors.push(err);
      return fallback;
    }
  };
  const config: NodeConfig = {
    dataDir: env.MOAT_DATA_DIR || DEFAULT_DATA_DIR,
    faults: parse(() => parseFaults(env.MOAT_FAULTS), new Map()),
    templateSnapshots: env.MOAT_TEMPLATE_SNAPSHOTS !== "off",
    spawnHelper: env.MOAT_SPAWN_HELPER !== "off",
    poolSize: parse(() => parseCount(env, "MOAT_POOL_SIZE", 2), 2),
    poolMaxSize: parse(() => parseCount(env, "MOAT_POOL_MAX", DEFAULT_POOL_MAX), DEFAULT_POOL_MAX),
    poolIdleMs: parse(
      () => parsePositive(env, "MOAT_POOL_IDLE_SECONDS", POOL_IDLE_MS / 1000) * 1000,
      POOL_IDLE_MS,
    ),
    createConcurrency: parse(
      () => parsePositive(env, "MOAT_CREATE_CONCURRENCY", DEFAULT_CREATE_CONCURRENCY),
      DEFAULT_CREATE_CONCURRENCY,
    ),
    createQueueMax: parse(
      () => parseCount(env, "MOAT_CREATE_QUEUE_MAX", DEFAULT_MAX_QUEUED),
      DEFAULT_MAX_QUEUED,
    ),
    createQueueTimeoutMs: parse(
      () => parsePositive(env, "MOAT_CREATE_QUEUE_TIMEOUT_SECONDS", DEFAULT_QUEUE_TIMEOUT_MS / 1000) * 1000,
      DEFAULT_QUEUE_TIMEOUT_MS,
    ),
    networkPoolSize: parse(() => parseCount(env, "MOAT_NETWORK_POOL_SIZE", 2), 2),
    maxConnectionsPerSandbox: parse(
      () => parseCount(env, "MOAT_SANDBOX_MAX_CONNECTIONS", DEFAULT_SANDBOX_CONNECTIONS),
      DEFAULT_SANDBOX_CONNECTIONS,
    ),
    registryAllow: parse(() => new RegistryAllowList(env.MOAT_REGISTRY_ALLOW ?? ""), new RegistryAllowList()),
    imageMaxBytes: parse(
      () => parseCount(env, "MOAT_IMAGE_MAX_MB", DEFAULT_IMAGE_MAX_BYTES / 2 ** 20) * 2 ** 20,
      DEFAULT_IMAGE_MAX_BYTES,
    ),
    egressAllow: parse(() => parseEgressAllow(env.MOAT_EGRESS_ALLOW), []),
    diskSizeMB: parse(() => diskSizeFromEnv(env.MOAT_DISK_SIZE_MB), DEFAULT_DISK_SIZE_MB),
    dnsUpstream: env.MOAT_DNS_UPSTREAM
      ? parse(() => parseUpstreams(env.MOAT_DNS_UPSTREAM!), undefined)
      : undefined,
    artifacts: env.MOAT_ARTIFACTS ? parse(() => checkArtifacts(env.MOAT_ARTIFACTS!), undefined) : undefined,
    artifactCacheMB: parse(
      () => parseCount(env, "MOAT_ARTIFACT_CACHE_MB", DEFAULT_ARTIFACT_CACHE_MB),
      DEFAULT_ARTIFACT_CACHE_MB,
    ),
    nodeID: parse(() => checkNodeID(env.MOAT_NODE_ID || DEFAULT_NODE_ID, "MOAT_NODE_ID"), DEFAULT_NODE_ID),
    namePrefix: parse(
      () => checkNamePrefix(env.MOAT_NAME_PREFIX || NAME_PREFIX, "MOAT_NAME_PREFIX"),
      NAME_PREFIX,
    ),
    nodeToken: env.MOAT_NODE_TOKEN
      ? parse(() => checkNodeToken(env.MOAT_NODE_TOKEN!, "MOAT_NODE_TOKEN"), undefined)
      : undefined,
    logsRetentionHours: parse(
      () => parseCount(env, "MOAT_LOGS_RETENTION_HOURS", DEFAULT_LOGS_RETENTION_HOURS),
      DEFAULT_LOGS_RETENTION_HOURS,
    ),
    logsMaxMB: parse(() => parsePositive(env, "MOAT_LOGS_MAX_MB", DEFAULT_LOGS_MAX_MB), DEFAULT_LOGS_MAX_MB),
    logsTotalMB: parse(
      () => parsePositive(env, "MOAT_LOGS_TOTAL_MB", DEFAULT_LOGS_TOTAL_MB),
      DEFAULT_LOGS_TOTAL_MB,
    ),
    metricsIntervalSeconds: parse(
      () => checkMetricsInterval(env.MOAT_METRICS_INTERVAL, "MOAT_METRICS_INTERVAL"),
      DEFAULT_METRICS_INTERVAL_SECONDS,
    ),
    metricsRetentionHours: parse(
      () => checkRetentionHours(env.MOAT_METRICS_RETENTION_HOURS, "MOAT_METRICS_RETENTION_HOURS"),
      DEFAULT_METRICS_RETENTION_HOURS,
    ),
  };
  if (errors.length === 1) throw errors[0];
  if (errors.length > 1) {
    throw new Error(
      `the node's environment has ${errors.length} malformed settings: ${errors
        .map((err) => (err instanceof Error ? err.message : String(err)))
        .join("; ")}`,
    );
  }
  return config;
}

/** Where moat keeps its state (runsc, templates, sandboxes): `MOAT_DATA_DIR`, else /var/lib/moat. */
export function defaultDataDir(env: Env = process.env): string {
  return env.MOAT_DATA_DIR || DEFAULT_DATA_DIR;
}

/** MOAT_DISK_SIZE_MB: 0 (no limit) or a size a sandbox disk can have; unset or empty is the default. */
export function diskSizeFromEnv(value: string | undefined): number {
  const size = Number(value || DEFAULT_DISK_SIZE_MB);
  if (!Number.isInteger(size) || (size !== 0 && (size < MIN_DISK_SIZE_MB || size > MAX_DISK_SIZE_MB))) {
    throw new Error(
      `MOAT_DISK_SIZE_MB must be 0 (no limit) or a whole number of MiB from ${MIN_DISK_SIZE_MB} to ${MAX_DISK_SIZE_MB}, got '${value}'`,
    );
  }
  return size;
}

/**
 * MOAT_DISK_SIZE_MB alone, undefined when malformed: `moat doctor` checks the host, and leaves a
 * bad value to the node's start to report.
 */
export function readDiskSizeMB(env: Env = process.env): number | undefined {
  try {
    return diskSizeFromEnv(env.MOAT_DISK_SIZE_MB);
  } catch {
    return undefined;
  }
}

function checkArtifacts(value: string): string {
  try {
    parseArtifactLocation(value);
  } catch (err) {
    throw new Error(`MOAT_ARTIFACTS: ${(err as Error).message}`);
  }
  return value;
}

/** A node id: 1 to 63 letters, digits, '.', '_' or '-', starting with a letter or digit (as the API accepts). */
export function checkNodeID(id: string, name = "nodeID"): string {
  if (!NODE_ID_PATTERN.test(id)) {
    throw new Error(
      `${name} must be 1 to 63 letters, digits, '.', '_' or '-', starting with a letter or digit, got '${id}'`,
    );
  }
  return id;
}

/** A node token set at deploy time: at least 32 printable characters, no spaces (not echoed). */
export function checkNodeToken(token: string, name = "nodeToken"): string {
  if (!NODE_TOKEN_PATTERN.test(token)) {
    throw new Error(
      `${name} must be at least 32 printable characters without spaces (e.g. openssl rand -hex 32)`,
    );
  }
  return token;
}

/** Seconds between metrics samples: a whole number from 0 (off) to 3600; unset or empty is the default. */
export function checkMetricsInterval(
  value: string | number | undefined,
  name = "metricsIntervalSeconds",
): number {
  if (value === undefined || value === "") return DEFAULT_METRICS_INTERVAL_SECONDS;
  const seconds = Number(value);
  if (!Number.isInteger(seconds) || seconds < 0 || seconds > 3600) {
    throw new Error(`${name} must be a whole number of seconds from 0 (off) to 3600, got '${value}'`);
  }
  return seconds;
}

/** Hours of metrics kept: a number > 0 (fractions allowed, at most a year); unset or empty is the default. */
export function checkRetentionHours(
  value: string | number | undefined,
  name = "metricsRetentionHours",
): number {
  if (value === undefined || value === "") return DEFAULT_METRICS_RETENTION_HOURS;
  const hours = Number(value);
  if (!Number.isFinite(hours) || hours <= 0 || hours > 24 * 366) {
    throw new Error(`${name} must be a number of hours > 0 and at most ${24 * 366}, got '${value}'`);
  }
  return hours;
}

/** MOAT_FAULTS: `pause:frozen=error,resume:restored=crash` → a map of step → kind (`=error` if left out). */
export function parseFaults(spec: string | undefined): Map<string, "error" | "crash"> {
  const faults = new Map<string, "error" | "crash">();
  for (const item of (spec ?? "").split(",").filter(Boolean)) {
    const [step, kind = "error"] = item.split("=");
    if (kind !== "error" && kind !== "crash")
      throw new Error(`MOAT_FAULTS: '${item}' must end in =error or =crash`);
    faults.set(step!, kind);
  }
  return faults;
}

/** A whole number ≥ 0; unset is `fallback`. Set but empty reads as 0, as it always has. */
function parseCount(env: Env, name: string, fallback: number): number {
  const raw = env[name];
  const value = Number(raw ?? fallback);
  if (!Number.isInteger(value) || value < 0) {
    throw new Error(`${name} must be a whole number ≥ 0, got '${raw}'`);
  }
  return value;
}

function parsePositive(env: Env, name: string, fallback: number): number {
  const raw = env[name];
  const value = Number(raw || fallback);
  if (!Number.isInteger(value) || value < 1)
    throw new Error(`${name} must be a whole number ≥ 1, got '${raw}'`);
  return value;
}
