/**
 * The API's configuration, parsed once at startup from the options `startAPI` is given (and, for
 * the settings an operator sets per deployment, from the environment). Every problem is reported
 * at once; nothing below this file reads `process.env`.
 */
import path from "node:path";
import type { Transport } from "@connectrpc/connect";
import { createLogger, type Logger, type NodeCapacity, type NodeLoad } from "@moat/shared";
import { z } from "zod";
import { DEFAULT_TEAM_LIMITS, TEAM_LIMIT_ENV, type TeamLimits, TeamLimitsSchema } from "./quotas/limits.js";

/** One orchestrator (node agent) the API places sandboxes on. */
export interface OrchestratorNodeOptions {
  /** Stable name of the node; recorded with each sandbox placed on it. */
  id: string;
  /** gRPC/Connect base URL of the node's orchestrator, e.g. "http://127.0.0.1:5008". */
  url?: string;
  /**
   * The node's token, which every RPC must carry (the file `node-token` in the orchestrator's data
   * directory); required with `url`. Env `MOAT_NODE_TOKEN` is the default for nodes without one.
   */
  token?: string;
  /** A ready transport instead of `url` (tests use an in-memory one). */
  transport?: Transport;
  /**
   * Base URL of the node's proxy (`moat orchestrator --proxy-port`), e.g. "http://10.0.0.5:5007":
   * written into the routing catalog with each of its sandboxes, so that client proxies on other
   * machines reach them through it. Unset: proxies reach sandbox addresses directly (one box).
   */
  proxyURL?: string;
  /**
   * Deadlines of the node's calls in ms (tests shorten them): `transition` (90 s) for creates,
   * pauses, resumes and kills, `call` (15 s) for the rest.
   */
  deadlines?: { call?: number; transition?: number };
  /**
   * A node in this process (`moat up`), which sends no heartbeat: asked for its capacity and load
   * when the admin routes show the nodes (`moat status`).
   */
  sampleLoad?: () => Promise<{ capacity: NodeCapacity; load: NodeLoad }>;
}

export interface APIOptions {
  /** moat's data directory; the embedded database lives in `<dataDir>/db`. */
  dataDir: string;
  /** Port to listen on; 0 picks a free one. Default 3000. */
  port?: number;
  /** Address to listen on. Default 127.0.0.1. */
  host?: string;
  /**
   * Where state lives: unset → PGlite under `<dataDir>/db` (env `DATABASE_URL` when set);
   * `postgres://…` or `postgresql://…` → PostgreSQL; `memory://` → an in-memory PGlite (tests).
   */
  databaseURL?: string;
  /** Static nodes; may be empty when nodes register themselves (needs `nodeToken`). */
  orchestrators: OrchestratorNodeOptions[];
  /**
   * The component secret (env `MOAT_NODE_TOKEN`): static nodes' default token, the token of every
   * registered node's RPC, and what nodes present to the `/internal/nodes/*` routes. Unset: nodes
   * cannot register.
   */
  nodeToken?: string;
  /**
   * A registered node whose last heartbeat is older than this is unhealthy (env
   * `MOAT_NODE_HEARTBEAT_TIMEOUT_SECONDS`). Default 10.
   */
  nodeHeartbeatTimeoutSeconds?: number;
  /** Sandbox domain returned to SDKs (`domain` in Sandbox responses); null when unset. */
  domain?: string;
  /** Guards the internal routes (`/internal/...`, header `X-Admin-Token`); env `MOAT_ADMIN_TOKEN`. Unset disables them. */
  adminToken?: string;
  /** Largest request body accepted, in bytes. Default 1 MiB. */
  maxBodyBytes?: number;
  /**
   * Base URL at which SDKs and nodes reach this API, for the signed URLs of template files (the
   * SDK uploads COPY files there, nodes download them); env `MOAT_API_PUBLIC_URL`. Default
   * `http://<host>:<port>` with 0.0.0.0/:: as 127.0.0.1 and the port actually listened on.
   */
  publicURL?: string;
  /**
   * Largest template file upload (a COPY step's tar) accepted, in bytes, unless a team's limit
   * says otherwise; the same as `quotas.maxUploadBytes`. Default 2 GiB.
   */
  maxUploadBytes?: number;
  /**
   * The operator's default quotas for every team (a team's own overrides win); each also from its
   * env var (`MOAT_TEAM_MAX_SANDBOXES`, … see quotas/limits.ts). Options win over the environment.
   */
  quotas?: Partial<TeamLimits>;
  /**
   * Bearer token that scrapes GET /metrics (env `MOAT_METRICS_TOKEN`); the admin token does too.
   * With neither, /metrics answers 401 to everyone.
   */
  metricsToken?: string;
  /**
   * Disk size of sandboxes and template builds in MiB: the most a sandbox's writable layer may
   * hold (the node enforces it); env `MOAT_DISK_SIZE_MB`. Default 10240; 0: no limit.
   */
  diskSizeMB?: number;
  /**
   * The nodes share artifact storage (their `--artifacts`): any node can start any build, so a
   * create may go to any ready node instead of the one that built it; env `MOAT_SHARED_ARTIFACTS=1`.
   * Default false.
   */
  sharedArtifacts?: boolean;
  /**
   * A fleet's routing catalog (`redis://…`; the CLI's `--redis-url` / MOAT_REDIS_URL): every
   * change of a sandbox is also written there for client proxies in other processes. Unset: the
   * catalog lives in this process only (`moat up`).
   */
  redisURL?: string;
  logger?: Logger;
}

export type DatabaseConfig =
  | { kind: "pglite"; dir: string }
  | { kind: "pglite-memory" }
  | { kind: "postgres"; url: string };

/**
 * Whether this process is the database's only user (embedded PGlite): then creates and builds an
 * earlier process recorded as under way died with it, and need no timeout to be recognised.
 */
export function ownsDatabase(database: DatabaseConfig): boolean {
  return database.kind !== "postgres";
}

export interface APIConfig {
  dataDir: string;
  port: number;
  host: string;
  database: DatabaseConfig;
  orchestrators: OrchestratorNodeOptions[];
  nodeToken: string | undefined;
  nodeHeartbeatTimeoutMs: number;
  domain: string | null;
  adminToken: string | undefined;
  maxBodyBytes: number;
  /** Without a trailing slash; undefined: derived from where the API listens. */
  publicURL: string | undefined;
  maxUploadBytes: number;
  /** Every team's limits unless its row overrides them. */
  quotas: TeamLimits;
  metricsToken: string | undefined;
  diskSizeMB: number;
  /** Creates of a build may go to any node (the nodes share artifacts). */
  sharedArtifacts: boolean;
  redisURL: string | undefined;
  logger: Logger;
}

export class ConfigError extends Error {
  constructor(readonly problems: string[]) {
    super(`invalid API configuration: ${problems.join("; ")}`);
    this.name = "ConfigError";
  }
}

const NODE_ID = /^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/;
/** The sandbox disk sizes a node accepts (orchestrator storage/disk.ts); E2B's default is 10 GB. */
const MIN_DISK_SIZE_MB = 64;
const MAX_DISK_SIZE_MB = 1024 * 1024;
const DEFAULT_DISK_SIZE_MB = 10 * 1024;
const DISK_SIZE_ERROR = `MOAT_DISK_SIZE_MB must be 0 (no limit) or a whole number of MiB from ${MIN_DISK_SIZE_MB} to ${MAX_DISK_SIZE_MB}`;

const optionsSchema = z.object({
  dataDir: z.string().min(1, "dataDir is required"),
  port: z.number().int().min(0).max(65535).default(3000),
  host: z.string().min(1).default("127.0.0.1"),
  databaseURL: z
    .string()
    .refine((url) => /^(postgres|postgresql|memory):\/\//.test(url), {
      message: "databaseURL must start with postgres://, postgresql:// or memory://",
    })
    .optional(),
  orchestrators: z
    .array(
      z
        .object({
          id: z.string().regex(NODE_ID, "orchestrator id must be 1-63 letters, digits, '.', '_' or '-'"),
          url: z.url().optional(),
          token: z
            .string()
            .regex(/^[\x21-\x7e]{32,}$/, "the node token is at least 32 printable characters without spaces")
            .optional(),
          transport: z.custom<Transport>((v) => typeof v === "object" && v !== null).optional(),
          sampleLoad: z
            .custom<NonNullable<OrchestratorNodeOptions["sampleLoad"]>>((v) => typeof v === "function")
            .optional(),
          proxyURL: z
            .url({ protocol: /^http$/, error: "proxyURL must be an http:// URL (the node proxy)" })
            .optional(),
          deadlines: z
            .object({
              call: z.number().int().positive().optional(),
              transition: z.number().int().positive().optional(),
            })
            .optional(),
        })
        .refine((node) => (node.url === undefined) !== (node.transport === undefined), {
          message: "each orchestrator needs exactly one of url or transport",
        })
        .refine((node) => node.url === undefined || node.token !== undefined, {
          message:
            "a node reached by url needs its token (the file node-token in that orchestrator's data directory): set token, or MOAT_NODE_TOKEN",
        }),
    )
    .refine((nodes) => new Set(nodes.map((n) => n.id)).size === nodes.length, {
      message: "orchestrator ids must be unique",
    }),
  nodeToken: z
    .string()
    .regex(/^[\x21-\x7e]{32,}$/, "MOAT_NODE_TOKEN must be at least 32 printable characters without spaces")
    .optional(),
  nodeHeartbeatTimeoutSeconds: z.coerce
    .number({ error: "MOAT_NODE_HEARTBEAT_TIMEOUT_SECONDS must be a number of seconds" })
    .min(1, "MOAT_NODE_HEARTBEAT_TIMEOUT_SECONDS must be at least 1")
    .max(3600, "MOAT_NODE_HEARTBEAT_TIMEOUT_SECONDS must be at most 3600")
    .default(10),
  domain: z.string().min(1).optional(),
  adminToken: z.string().min(16, "adminToken must be at least 16 characters").optional(),
  maxBodyBytes: z
    .number()
    .int()
    .min(1024)
    .max(64 * 1024 * 1024)
    .default(1024 * 1024),
  publicURL: z
    .url({ protocol: /^https?$/, error: "publicURL must be an http:// or https:// URL" })
    .refine((url) => !/[?#]/.test(url), { message: "publicURL must not have a query or fragment" })
    .optional(),
  maxUploadBytes: z
    .number()
    .int()
    .min(1024)
    .max(Number.MAX_SAFE_INTEGER)
    .default(2 * 1024 ** 3),
  quotas: TeamLimitsSchema.partial().default({}),
  metricsToken: z.string().min(16, "metricsToken must be at least 16 characters").optional(),
  diskSizeMB: z.coerce
    .number({ error: DISK_SIZE_ERROR })
    .int({ error: DISK_SIZE_ERROR })
    .refine((mb) => mb === 0 || (mb >= MIN_DISK_SIZE_MB && mb <= MAX_DISK_SIZE_MB), {
      error: DISK_SIZE_ERROR,
    })
    .default(DEFAULT_DISK_SIZE_MB),
  sharedArtifacts: z
    .boolean({ error: "must be true or false (MOAT_SHARED_ARTIFACTS: 1 or 0)" })
    .default(false),
  redisURL: z
    .string()
    .refine((url) => /^rediss?:\/\/./.test(url), {
      message: "redisURL must start with redis:// or rediss://",
    })
    .optional(),
});

export function parseConfig(options: APIOptions, env: NodeJS.ProcessEnv = process.env): APIConfig {
  const { logger, ...rest } = options;
  const nodeToken = rest.nodeToken ?? (env.MOAT_NODE_TOKEN?.trim() || undefined);
  const parsed = optionsSchema.safeParse({
    ...rest,
    orchestrators: rest.orchestrators?.map((node) => ({
      ...node,
      token: node.token ?? rest.nodeToken ?? nodeToken,
    })),
    nodeToken: rest.nodeToken ?? nodeToken,
    nodeHeartbeatTimeoutSeconds:
      rest.nodeHeartbeatTimeoutSeconds ?? (env.MOAT_NODE_HEARTBEAT_TIMEOUT_SECONDS?.trim() || undefined),
    databaseURL: rest.databaseURL ?? (env.DATABASE_URL || undefined),
    adminToken: rest.adminToken ?? (env.MOAT_ADMIN_TOKEN || undefined),
    publicURL: rest.publicURL ?? (env.MOAT_API_PUBLIC_URL || undefined),
    metricsToken: rest.metricsToken ?? (env.MOAT_METRICS_TOKEN || undefined),
    quotas: { ...quotasFromEnv(env), ...rest.quotas },
    diskSizeMB: rest.diskSizeMB ?? (env.MOAT_DISK_SIZE_MB || undefined),
    sharedArtifacts: rest.sharedArtifacts ?? envFlag(env.MOAT_SHARED_ARTIFACTS),
  });
  if (!parsed.success) {
    throw new ConfigError(
      parsed.error.issues.map((issue) => {
        const [first, name] = issue.path;
        // A default from the environment is named as the operator set it.
        const where =
          first === "quotas" &&
          typeof name === "string" &&
          rest.quotas?.[name as keyof TeamLimits] === undefined
            ? TEAM_LIMIT_ENV[name as keyof TeamLimits]
            : issue.path.join(".");
        return where ? `${where}: ${issue.message}` : issue.message;
      }),
    );
  }
  const o = parsed.data;
  if (o.orchestrators.length === 0 && o.nodeToken === undefined) {
    throw new ConfigError([
      "orchestrators: at least one orchestrator is required, or set MOAT_NODE_TOKEN so that nodes register themselves",
    ]);
  }
  // Options before the environment: `maxUploadBytes` (older) is the same setting as the quota.
  const maxUploadBytes =
    rest.quotas?.maxUploadBytes === undefined && rest.maxUploadBytes !== undefined
      ? o.maxUploadBytes
      : (o.quotas.maxUploadBytes ?? o.maxUploadBytes);
  return {
    dataDir: path.resolve(o.dataDir),
    port: o.port,
    host: o.host,
    database: databaseConfig(o.databaseURL, o.dataDir),
    orchestrators: o.orchestrators.map((n) => ({
      id: n.id,
      url: n.url,
      token: n.token,
      transport: n.transport,
      deadlines: n.deadlines,
      sampleLoad: n.sampleLoad,
      ...(n.proxyURL ? { proxyURL: n.proxyURL.replace(/\/+$/, "") } : {}),
    })),
    nodeToken: o.nodeToken,
    nodeHeartbeatTimeoutMs: o.nodeHeartbeatTimeoutSeconds * 1000,
    domain: o.domain ?? null,
    adminToken: o.adminToken,
    maxBodyBytes: o.maxBodyBytes,
    publicURL: o.publicURL?.replace(/\/+$/, ""),
    maxUploadBytes,
    quotas: { ...DEFAULT_TEAM_LIMITS, ...o.quotas, maxUploadBytes },
    metricsToken: o.metricsToken,
    diskSizeMB: o.diskSizeMB,
    sharedArtifacts: o.sharedArtifacts,
    redisURL: o.redisURL,
    logger: logger ?? createLogger("api"),
  };
}

/** `1` or `0` (unset or empty: undefined); anything else is passed on to fail validation. */
function envFlag(value: string | undefined): unknown {
  if (!value) return undefined;
  return value === "1" ? true : value === "0" ? false : value;
}

function databaseConfig(url: string | undefined, dataDir: string): DatabaseConfig {
  if (url === undefined) return { kind: "pglite", dir: path.resolve(dataDir, "db") };
  if (url.startsWith("memory://")) return { kind: "pglite-memory" };
  return { kind: "postgres", url };
}

/** The default quotas the environment sets; a value that is not a number is left to fail validation. */
function quotasFromEnv(env: NodeJS.ProcessEnv): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [name, variable] of Object.entries(TEAM_LIMIT_ENV)) {
    const raw = env[variable]?.trim();
    if (!raw) continue;
    out[name] = /^\d+(\.\d+)?$/.test(raw) ? Number(raw) : raw;
  }
  return out;
}
