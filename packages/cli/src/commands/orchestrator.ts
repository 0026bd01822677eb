import {
  defaultDataDir,
  type EgressAllowEntry,
  ensureBaseTemplate,
  ensureRunsc,
  startOrchestrator,
  TemplateStore,
} from "@moat/orchestrator";
import { createLogger } from "@moat/shared";
import { Command } from "commander";
import { ARTIFACT_CACHE_HELP, ARTIFACTS_HELP, artifactsOrExit } from "../args/artifacts.js";
import { parseCount } from "../args/count.js";
import { EGRESS_ALLOW_HELP, egressAllowOrExit, parseEgressAllowOption } from "../args/egress-allow.js";
import { parsePort } from "../args/port.js";
import { DEFAULT_NODE_PROXY_PORT, startOrchestratorNodeProxy } from "../node-proxy.js";

interface OrchestratorCommandOptions {
  dataDir: string;
  port: number;
  host: string;
  proxyPort: number;
  egressAllow?: EgressAllowEntry[];
  artifacts?: string;
  artifactCacheMb?: number;
}

/**
 * `moat orchestrator`: the node agent on its own (`moat up` runs it beside the API and proxy).
 * Stopping it leaves sandboxes running; the next start adopts them.
 */
export function orchestratorCommand(): Command {
  return new Command("orchestrator")
    .description("run the node agent: gVisor sandboxes served over gRPC/Connect")
    .option("--data-dir <dir>", "where runtime, templates and sandboxes live", defaultDataDir())
    .option("--port <port>", "gRPC/Connect port", parsePort, 5008)
    .option(
      "--host <host>",
      "address to listen on (every call needs the token in <data-dir>/node-token)",
      "127.0.0.1",
    )
    .option(
      "--proxy-port <port>",
      "node proxy port, on --host: a fleet's client proxies reach this node's sandboxes there, with the node token (env MOAT_NODE_PROXY_PORT)",
      parsePort,
      process.env.MOAT_NODE_PROXY_PORT
        ? parsePort(process.env.MOAT_NODE_PROXY_PORT)
        : DEFAULT_NODE_PROXY_PORT,
    )
    .option("--egress-allow <cidrs>", EGRESS_ALLOW_HELP, parseEgressAllowOption)
    .option("--artifacts <location>", ARTIFACTS_HELP)
    .option("--artifact-cache-mb <mb>", ARTIFACT_CACHE_HELP, parseCount)
    .action(async (opts: OrchestratorCommandOptions) => {
      const logger = createLogger("orchestrator");
      const egressAllow = egressAllowOrExit(opts.egressAllow);
      const artifacts = await artifactsOrExit(opts.artifacts);
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
