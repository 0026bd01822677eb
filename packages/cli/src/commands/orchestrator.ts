import path from "node:path";
import {
  type ArtifactStore,
  DirectoryArtifactStore,
  defaultDataDir,
  type EgressAllowEntry,
  ensureBaseTemplate,
  ensureRunsc,
  startOrchestrator,
  TemplateStore,
} from "@moat/orchestrator";
import { createLogger } from "@moat/shared";
import { Command } from "commander";
import { EGRESS_ALLOW_HELP, egressAllowOrExit, parseEgressAllowOption } from "../args/egress-allow.js";
import { parsePort } from "../args/port.js";

interface OrchestratorCommandOptions {
  dataDir: string;
  port: number;
  host: string;
  egressAllow?: EgressAllowEntry[];
  artifacts?: string;
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
    .option("--egress-allow <cidrs>", EGRESS_ALLOW_HELP, parseEgressAllowOption)
    .option(
      "--artifacts <dir>",
      "shared artifact storage (a directory every node mounts): paused sandboxes resume on any node (env MOAT_ARTIFACTS)",
      process.env.MOAT_ARTIFACTS || undefined,
    )
    .action(async (opts: OrchestratorCommandOptions) => {
      const logger = createLogger("orchestrator");
      const egressAllow = egressAllowOrExit(opts.egressAllow);
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
        artifacts: artifactStore(opts.artifacts),
      });
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
        orchestrator.close().then(
          () => process.exit(0),
          () => process.exit(1),
        );
      };
      process.once("SIGTERM", () => stop("SIGTERM"));
      process.once("SIGINT", () => stop("SIGINT"));
    });
}

/** The shared artifact store `--artifacts` names (a directory; S3 comes with the artifacts backends). */
function artifactStore(location: string | undefined): ArtifactStore | undefined {
  if (!location) return undefined;
  if (!path.isAbsolute(location)) {
    process.stderr.write(
      `moat orchestrator: --artifacts must be an absolute directory path, not '${location}'\n`,
    );
    process.exit(2);
  }
  return new DirectoryArtifactStore(location);
}
