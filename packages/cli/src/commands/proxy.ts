/**
 * `moat proxy`: a client proxy on its own, for a fleet. It reads the routing catalog the API
 * processes write to Redis, forwards each request to the proxy of the sandbox's node with the node
 * token (MOAT_NODE_TOKEN), and asks the API to resume paused sandboxes (auto-resume).
 */
import { startClientProxy } from "@moat/client-proxy";
import { createLogger } from "@moat/shared";
import { Command } from "commander";
import { parsePort } from "../args/port.js";

interface ProxyCommandOptions {
  port: number;
  host: string;
  redisURL?: string;
  apiURL?: string;
  domain: string;
}

export function proxyCommand(): Command {
  return new Command("proxy")
    .description("run a client proxy that routes sandbox traffic through a fleet's Redis catalog")
    .option("--port <port>", "port to listen on (E2B_SANDBOX_URL)", parsePort, 3002)
    .option("--host <host>", "address to listen on", "127.0.0.1")
    .option(
      "--redis-url <url>",
      "the routing catalog the APIs write (env MOAT_REDIS_URL)",
      process.env.MOAT_REDIS_URL,
    )
    .option(
      "--api-url <url>",
      "an API's base URL, for auto-resume of paused sandboxes (env MOAT_API_URL; unset: no auto-resume)",
      process.env.MOAT_API_URL,
    )
    .option("--domain <domain>", "domain of sandbox hosts: <port>-<sandboxID>.<domain>", "moat.local")
    .action(async (opts: ProxyCommandOptions) => {
      const logger = createLogger("client-proxy");
      const nodeToken = process.env.MOAT_NODE_TOKEN?.trim() || undefined;
      if (!opts.redisURL) {
        logger.error("moat proxy needs the routing catalog: set --redis-url or MOAT_REDIS_URL");
        process.exit(2);
      }
      if (!nodeToken || nodeToken.length < 32) {
        logger.error(
          "moat proxy needs MOAT_NODE_TOKEN (at least 32 characters), the same as the nodes and APIs",
        );
        process.exit(2);
      }
      const proxy = await startClientProxy({
        port: opts.port,
        host: opts.host,
        domain: opts.domain,
        redisURL: opts.redisURL,
        ...(opts.apiURL ? { apiURL: opts.apiURL } : {}),
        nodeToken,
        logger,
        metricsToken: process.env.MOAT_METRICS_TOKEN || undefined,
      });
      const stop = (signal: string) => {
        logger.info({ signal }, "client proxy stopping");
        proxy.close().then(
          () => process.exit(0),
          () => process.exit(1),
        );
      };
      process.once("SIGTERM", () => stop("SIGTERM"));
      process.once("SIGINT", () => stop("SIGINT"));
    });
}
