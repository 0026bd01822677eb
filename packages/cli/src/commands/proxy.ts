/**
 * `moat proxy`: the client proxy on its own, for a fleet (`moat up` runs it beside the API, reading
 * the API's catalog in-process). Apart from the API it finds sandboxes in the routing catalog the
 * API writes to Redis, forwards to the node proxy of each sandbox's node (with MOAT_NODE_TOKEN),
 * and asks the API to resume paused sandboxes (auto-resume). Any number of them run side by side.
 */
import { startClientProxy } from "@moat/client-proxy";
import { createLogger } from "@moat/shared";
import { Command, Option } from "commander";
import { parseCount } from "../args/count.js";
import { parsePort } from "../args/port.js";

interface ProxyCommandOptions {
  port: number;
  host: string;
  domain: string;
  redisUrl?: string;
  apiUrl?: string;
  maxConnections?: number;
  maxConnectionsPerClient?: number;
}

export function proxyCommand(): Command {
  return new Command("proxy")
    .description("run the client proxy: routes sandbox traffic (<port>-<sandboxID>.<domain>) to its node")
    .option("--port <port>", "port to listen on (E2B_SANDBOX_URL)", parsePort, 3002)
    .option("--host <host>", "address to listen on", "127.0.0.1")
    .option("--domain <domain>", "domain of sandbox hosts: <port>-<sandboxID>.<domain>", "moat.local")
    .addOption(
      new Option("--redis-url <url>", "redis://… of the routing catalog the API writes (required)").env(
        "MOAT_REDIS_URL",
      ),
    )
    .addOption(
      new Option("--api-url <url>", "the API, which resumes paused sandboxes for auto-resume").env(
        "MOAT_API_URL",
      ),
    )
    .addOption(
      new Option(
        "--max-connections <n>",
        "client connections held at once (default: a quarter of the open-file limit; 0: no cap)",
      )
        .env("MOAT_PROXY_MAX_CONNECTIONS")
        .argParser(parseCount),
    )
    .addOption(
      new Option(
        "--max-connections-per-client <n>",
        "connections one client address may hold (default: half of --max-connections; 0 behind a load balancer)",
      )
        .env("MOAT_PROXY_MAX_CONNECTIONS_PER_CLIENT")
        .argParser(parseCount),
    )
    .addHelpText(
      "after",
      "\nEnvironment: MOAT_NODE_TOKEN (the components' token, ≥ 32 printable characters), MOAT_METRICS_TOKEN (reads /metrics; unset: /metrics answers 401).",
    )
    .action((opts: ProxyCommandOptions) => runProxy(opts));
}

async function runProxy(opts: ProxyCommandOptions): Promise<void> {
  const logger = createLogger("client-proxy");
  if (!opts.redisUrl) {
    process.stderr.write(
      "moat proxy: set --redis-url (or MOAT_REDIS_URL) to the Redis the API writes its routing catalog to (moat api --redis-url)\n",
    );
    process.exit(1);
  }
  const nodeToken = process.env.MOAT_NODE_TOKEN?.trim() || undefined;
  if (!nodeToken || !/^[\x21-\x7e]{32,}$/.test(nodeToken)) {
    process.stderr.write(
      "moat proxy: set MOAT_NODE_TOKEN (at least 32 printable characters, the same as the nodes' and the APIs'): node proxies and the API's internal routes require it\n",
    );
    process.exit(1);
  }
  const proxy = await startClientProxy({
    port: opts.port,
    host: opts.host,
    domain: opts.domain,
    logger,
    metricsToken: process.env.MOAT_METRICS_TOKEN || undefined,
    maxConnections: opts.maxConnections,
    maxConnectionsPerClient: opts.maxConnectionsPerClient,
    // No in-process catalog here (that is `moat up`'s): the catalog the API writes to Redis.
    redisURL: opts.redisUrl,
    ...(opts.apiUrl ? { apiURL: opts.apiUrl } : {}),
    nodeToken,
  });
  process.stderr.write(`moat proxy: listening on http://${opts.host}:${proxy.port}\n`);
  let stopping = false;
  const stop = (signal: string) => {
    if (stopping) return;
    stopping = true;
    logger.info({ signal }, "proxy stopping");
    proxy.close().then(
      () => process.exit(0),
      () => process.exit(1),
    );
  };
  process.once("SIGTERM", () => stop("SIGTERM"));
  process.once("SIGINT", () => stop("SIGINT"));
}
