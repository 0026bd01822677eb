/**
 * `moat api`: the REST API on its own, for a fleet (`moat up` runs it beside a node and a proxy).
 * Any number of them share one PostgreSQL database; nodes are listed with `--node <id>=<url>`
 * (their token: MOAT_NODE_TOKEN, the same on every component).
 */
import { type APIOptions, ConfigError, startAPI } from "@moat/api";
import { DEFAULT_DATA_DIR } from "@moat/orchestrator";
import { createLogger } from "@moat/shared";
import { startTelemetry } from "@moat/shared/telemetry";
import { Command, Option } from "commander";
import { parseStaticNode, type StaticNode } from "../args/node.js";
import { parsePort } from "../args/port.js";

interface APICommandOptions {
  port: number;
  host: string;
  dataDir: string;
  databaseUrl?: string;
  redisUrl?: string;
  domain?: string;
  publicUrl?: string;
  node: StaticNode[];
  sharedArtifacts?: boolean;
}

export function apiCommand(): Command {
  return new Command("api")
    .description("run the E2B-compatible REST API (any number of them, sharing one PostgreSQL database)")
    .option("--port <port>", "port to listen on (E2B_API_URL)", parsePort, 3000)
    .option("--host <host>", "address to listen on", "127.0.0.1")
    .addOption(
      new Option(
        "--data-dir <dir>",
        "where uploaded template files live (and the embedded database without --database-url)",
      )
        .env("MOAT_DATA_DIR")
        .default(DEFAULT_DATA_DIR),
    )
    .addOption(
      new Option(
        "--database-url <url>",
        "postgres://… shared by every API process (default: the embedded PGlite under <data-dir>/db, one process only)",
      ).env("DATABASE_URL"),
    )
    .addOption(
      new Option("--redis-url <url>", "redis://… of the routing catalog the proxies read").env(
        "MOAT_REDIS_URL",
      ),
    )
    .option("--domain <domain>", "domain of sandbox hosts: <port>-<sandboxID>.<domain>", "moat.local")
    .addOption(
      new Option(
        "--public-url <url>",
        "where SDKs and nodes reach this API, for signed template file URLs (default: where it listens)",
      ).env("MOAT_API_PUBLIC_URL"),
    )
    .addOption(
      new Option(
        "--shared-artifacts",
        "the nodes share artifact storage (their --artifacts): a build's sandboxes may start on any node",
      ).env("MOAT_SHARED_ARTIFACTS"),
    )
    .option(
      "--node <id=url>",
      "a node the API places sandboxes on, e.g. node-1=http://10.0.0.5:5008 (repeatable; its token: MOAT_NODE_TOKEN)",
      parseStaticNode,
      [],
    )
    .addHelpText(
      "after",
      "\nEnvironment: MOAT_NODE_TOKEN (the nodes' token, ≥ 32 printable characters), MOAT_ADMIN_TOKEN (admin routes; unset: off), MOAT_METRICS_TOKEN, the team quotas MOAT_TEAM_* (docs/configuration.md).",
    )
    .action((opts: APICommandOptions) => runAPI(opts));
}

async function runAPI(opts: APICommandOptions): Promise<void> {
  const logger = createLogger("api");
  const telemetry = startTelemetry({ serviceName: "moat-api", logger });
  const options: APIOptions = {
    dataDir: opts.dataDir || DEFAULT_DATA_DIR,
    port: opts.port,
    host: opts.host,
    databaseURL: opts.databaseUrl,
    domain: opts.domain,
    publicURL: opts.publicUrl,
    // The token of each: MOAT_NODE_TOKEN (read by the API's configuration).
    orchestrators: opts.node.map((n) => ({ id: n.id, url: n.url })),
    redisURL: opts.redisUrl,
    ...(opts.sharedArtifacts ? { sharedArtifacts: true } : {}),
    logger,
  };
  let api: Awaited<ReturnType<typeof startAPI>>;
  try {
    api = await startAPI(options);
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    process.stderr.write(`moat api: ${err.message}\n`);
    process.exit(1);
  }
  process.stderr.write(`moat api: listening on ${api.url}\n`);
  let stopping = false;
  const stop = (signal: string) => {
    if (stopping) return;
    stopping = true;
    logger.info({ signal }, "API stopping");
    api.close().then(
      () => telemetry.shutdown().then(() => process.exit(0)),
      (err: unknown) => {
        logger.error({ err }, "API close");
        process.exit(1);
      },
    );
  };
  process.once("SIGTERM", () => stop("SIGTERM"));
  process.once("SIGINT", () => stop("SIGINT"));
}
