/**
 * The API's configuration, parsed once at startup from the options `startAPI` is given (and, for
 * the settings an operator sets per deployment, from the environment). Every problem is reported
 * at once; nothing below this file reads `process.env`.
 */
import path from "node:path";
import type { Transport } from "@connectrpc/connect";
import { createLogger, type Logger } from "@moat/shared";
import { z } from "zod";

/** One orchestrator (node agent) the API places sandboxes on. */
export interface OrchestratorNodeOptions {
  /** Stable name of the node; recorded with each sandbox placed on it. */
  id: string;
  /** gRPC/Connect base URL of the node's orchestrator, e.g. "http://127.0.0.1:5008". */
  url?: string;
  /** A ready transport instead of `url` (tests use an in-memory one). */
  transport?: Transport;
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
  orchestrators: OrchestratorNodeOptions[];
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
  /** Largest template file upload (a COPY step's tar) accepted, in bytes. Default 2 GiB. */
  maxUploadBytes?: number;
  logger?: Logger;
}

export type DatabaseConfig =
  | { kind: "pglite"; dir: string }
  | { kind: "pglite-memory" }
  | { kind: "postgres"; url: string };

export interface APIConfig {
  dataDir: string;
  port: number;
  host: string;
  database: DatabaseConfig;
  orchestrators: OrchestratorNodeOptions[];
  domain: string | null;
  adminToken: string | undefined;
  maxBodyBytes: number;
  /** Without a trailing slash; undefined: derived from where the API listens. */
  publicURL: string | undefined;
  maxUploadBytes: number;
  logger: Logger;
}

export class ConfigError extends Error {
  constructor(readonly problems: string[]) {
    super(`invalid API configuration: ${problems.join("; ")}`);
    this.name = "ConfigError";
  }
}

const NODE_ID = /^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/;

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
          transport: z.custom<Transport>((v) => typeof v === "object" && v !== null).optional(),
        })
        .refine((node) => (node.url === undefined) !== (node.transport === undefined), {
          message: "each orchestrator needs exactly one of url or transport",
        }),
    )
    .min(1, "at least one orchestrator is required")
    .refine((nodes) => new Set(nodes.map((n) => n.id)).size === nodes.length, {
      message: "orchestrator ids must be unique",
    }),
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
});

export function parseConfig(options: APIOptions, env: NodeJS.ProcessEnv = process.env): APIConfig {
  const { logger, ...rest } = options;
  const parsed = optionsSchema.safeParse({
    ...rest,
    databaseURL: rest.databaseURL ?? (env.DATABASE_URL || undefined),
    adminToken: rest.adminToken ?? (env.MOAT_ADMIN_TOKEN || undefined),
    publicURL: rest.publicURL ?? (env.MOAT_API_PUBLIC_URL || undefined),
  });
  if (!parsed.success) {
    throw new ConfigError(
      parsed.error.issues.map((issue) =>
        issue.path.length > 0 ? `${issue.path.join(".")}: ${issue.message}` : issue.message,
      ),
    );
  }
  const o = parsed.data;
  return {
    dataDir: path.resolve(o.dataDir),
    port: o.port,
    host: o.host,
    database: databaseConfig(o.databaseURL, o.dataDir),
    orchestrators: o.orchestrators.map((n) => ({ id: n.id, url: n.url, transport: n.transport })),
    domain: o.domain ?? null,
    adminToken: o.adminToken,
    maxBodyBytes: o.maxBodyBytes,
    publicURL: o.publicURL?.replace(/\/+$/, ""),
    maxUploadBytes: o.maxUploadBytes,
    logger: logger ?? createLogger("api"),
  };
}

function databaseConfig(url: string | undefined, dataDir: string): DatabaseConfig {
  if (url === undefined) return { kind: "pglite", dir: path.resolve(dataDir, "db") };
  if (url.startsWith("memory://")) return { kind: "pglite-memory" };
  return { kind: "postgres", url };
}
