import {
  DEFAULT_DATA_DIR,
  DEFAULT_NODE_ID,
  type EgressAllowEntry,
  ensureBaseTemplate,
  ensureRunsc,
  NAME_PREFIX,
  startOrchestrator,
  TemplateStore,
} from "@moat/orchestrator";
import { createLogger } from "@moat/shared";
import { Command, Option } from "commander";
import { ARTIFACT_CACHE_HELP, ARTIFACTS_HELP, artifactsOrExit } from "../args/artifacts.js";
import { parseCount } from "../args/count.js";
import { EGRESS_ALLOW_HELP, egressAllowOrExit, parseEgressAllowOption } from "../args/egress-allow.js";
import { parseAddress, parseHTTPURL, parseLabels } from "../args/fleet.js";
import { parseNamePrefix, parseNodeID } from "../args/node.js";
import { parsePort } from "../args/port.js";
import { sandboxLogsOptions } from "../args/sandbox-logs.js";
import { DEFAULT_NODE_PROXY_PORT, startOrchestratorNodeProxy } from "../node-proxy.js";

interface OrchestratorCommandOptions {
  dataDir: string;
  port: number;
  host: string;
  proxyPort: number;
  egressAllow?: EgressAllowEntry[];
  artifacts?: string;
  artifactCacheMb?: number;
  logsRetention?: number;
  logsMaxMb?: number;
  advertiseAddress?: string;
  apiUrl?: string;
  labels?: string[];
  nodeId: string;
  namePrefix: string;
}

/**
 * `moat orchestrator`: the node agent on its own (`moat up` runs it beside the API and proxy).
 * Stopping it leaves sandboxes running; the next start adopts them.
 */
export function orchestratorCommand(): Command {
  return new Command("orchestrator")
    .description("run the node agent: gVisor sandboxes served over gRPC/Connect")
    .addOption(
      new Option("--data-dir <dir>", "where runtime, templates and sandboxes live")
        .env("MOAT_DATA_DIR")
        .default(DEFAULT_DATA_DIR),
    )
    .option("--port <port>", "gRPC/Connect port", parsePort, 5008)
    .option(
      "--host <host>",
      "address to listen on (every call needs the node token: MOAT_NODE_TOKEN, else the file <data-dir>/node-token)",
      "127.0.0.1",
    )
    .addOption(
      new Option(
        "--proxy-port <port>",
        "node proxy port, on --host: a fleet's client proxies reach this node's sandboxes there, with the node token",
      )
        .env("MOAT_NODE_PROXY_PORT")
        .default(DEFAULT_NODE_PROXY_PORT)
        .argParser(parsePort),
    )
    .addOption(new Option("--artifacts <location>", ARTIFACTS_HELP).env("MOAT_ARTIFACTS"))
    .addOption(sandboxLogsOptions()[0]!)
    .addOption(sandboxLogsOptions()[1]!)
    .addOption(
      new Option("--artifact-cache-mb <mb>", ARTIFACT_CACHE_HELP)
        .env("MOAT_ARTIFACT_CACHE_MB")
        .argParser(parseCount),
    )
    .addOption(
      new Option(
        "--advertise-address <addr>",
        "where the API and proxies reach this node (default: --host, or the first non-loopback address for 0.0.0.0)",
      )
        .env("MOAT_NODE_ADDRESS")
        .argParser(parseAddress),
    )
    .addOption(
      new Option(
        "--api-url <url>",
        "the API to register with and heartbeat to every 2 s (needs MOAT_NODE_TOKEN, the same as the API's); unset: the API lists this node statically",
      )
        .env("MOAT_API_URL")
        .argParser(parseHTTPURL),
    )
    .addOption(
      new Option("--labels <a,b>", "labels the node registers with (e.g. build)")
        .env("MOAT_NODE_LABELS")
        .argParser(parseLabels),
    )
    .addOption(
      new Option("--egress-allow <cidrs>", EGRESS_ALLOW_HELP)
        .env("MOAT_EGRESS_ALLOW")
        .argParser(parseEgressAllowOption),
    )
    .addOption(
      new Option("--node-id <id>", "the node's name in the fleet (letters, digits, '.', '_', '-')")
        .env("MOAT_NODE_ID")
        .default(DEFAULT_NODE_ID)
        .argParser(parseNodeID),
    )
    .addOption(
      new Option(
        "--name-prefix <prefix>",
        "prefix of the node's host-global names (network namespaces, host lock): one per node sharing a kernel, each node in a network namespace of its own",
      )
        .env("MOAT_NAME_PREFIX")
        .default(NAME_PREFIX)
        .argParser(parseNamePrefix),
    )
    .addHelpText(
      "after",
      "\nEnvironment: MOAT_NODE_TOKEN (the token every call needs, ≥ 32 printable characters, the same on every component; unset: <data-dir>/node-token), MOAT_CODE_INTERPRETER=off (no code-interpreter template), and the node settings in docs/configuration.md (MOAT_POOL_SIZE, MOAT_DISK_SIZE_MB, …).",
    )
    .action(async (opts: OrchestratorCommandOptions) => {
      const logger = createLogger("orchestrator");
      const egressAllow = egressAllowOrExit(opts.egressAllow);
      const artifacts = await artifactsOrExit(opts.artifacts);
      opts.dataDir ||= DEFAULT_DATA_DIR;
      const runsc = await ensureRunsc({ dataDir: opts.dataDir, logger });
      const base = await ensureBaseTemplate({
        dataDir: opts.dataDir,
        logger,
        onProgress: (ev) => logger.info({ phase: ev.phase }, ev.message),
      });
      const orchestrator = await startOrchestrator({
        dataDir: opts.dataDir,
        port: opts.port,
        host: opts.host,
        logger,
        runscBinary: runsc.path,
        platform: runsc.platform,
        templates: new TemplateStore(opts.dataDir, base.rootfs),
        egressAllow,
        artifacts,
        artifactCacheMB: opts.artifactCacheMb,
        logsRetentionHours: opts.logsRetention,
        logsMaxMB: opts.logsMaxMb,
        advertiseAddress: opts.advertiseAddress,
        apiURL: opts.apiUrl,
        labels: opts.labels,
        proxyPort: opts.proxyPort,
        nodeID: opts.nodeId,
        namePrefix: opts.namePrefix,
      });
      let nodeProxy: Awaited<ReturnType<typeof startOrchestratorNodeProxy>>;
      try {
        nodeProxy = await startOrchestratorNodeProxy(orchestrator, {
          host: opts.host,
          port: opts.proxyPort,
          logger: createLogger("node-proxy"),
        });
      } catch (err) {
        logger.error(
          { err, port: opts.proxyPort },
          "the node proxy could not start: choose another --proxy-port",
        );
        await orchestrator.close();
        process.exit(1);
      }
      // Every node has the code-interpreter template: built in the background the first time.
      if (process.env.MOAT_CODE_INTERPRETER !== "off") {
        orchestrator
          .ensureCodeInterpreter((message) => logger.info({ template: "code-interpreter" }, message))
          .then(
            (ci) =>
              logger.info({ buildID: ci.buildID, reused: ci.reused }, "code-interpreter template ready"),
            (err: unknown) => logger.error({ err }, "building the code-interpreter template failed"),
          );
      }
      const stop = (signal: string) => {
        logger.info({ signal }, "orchestrator stopping; sandboxes keep running");
        Promise.all([nodeProxy.close(), orchestrator.close()]).then(
          () => process.exit(0),
          () => process.exit(1),
        );
      };
      process.once("SIGTERM", () => stop("SIGTERM"));
      process.once("SIGINT", () => stop("SIGINT"));
    });
}
