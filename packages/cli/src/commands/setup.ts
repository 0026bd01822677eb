import { setTimeout as sleep } from "node:timers/promises";
import {
  type BaseTemplate,
  codeInterpreterBuildID,
  defaultDataDir,
  ensureBaseTemplate,
  ensureRunsc,
  HostLockedError,
  type RunscInstall,
  SetupError,
  startOrchestrator,
  TemplateStore,
} from "@moat/orchestrator";
import { createLogger, type Logger, makeDataDirPrivate } from "@moat/shared";
import { Command, Option } from "commander";
import { StatusLine } from "../console/status-line.js";

/**
 * `moat setup`: installs what sandboxes need under the data dir (runsc, the base template, the
 * code-interpreter template). Quick when already done; `npm test` and `moat up` call it. Progress
 * goes to stderr, the outcome to stdout. `MOAT_CODE_INTERPRETER=off` leaves the code-interpreter
 * template out.
 */
export function setupCommand(): Command {
  return new Command("setup")
    .description(
      "install runsc and build the base and code-interpreter templates (cached; minutes the first time)",
    )
    .addOption(
      new Option("--data-dir <dir>", "moat's data directory (default: /var/lib/moat)").env("MOAT_DATA_DIR"),
    )
    .action(async (opts: { dataDir?: string }) => {
      const dataDir = opts.dataDir ?? defaultDataDir();
      // Progress lines say what happens; JSON logs only for problems unless MOAT_LOG_LEVEL asks.
      const logger = createLogger("setup", process.env.MOAT_LOG_LEVEL ?? "warn");
      const status = new StatusLine(process.stderr);
      try {
        await makeDataDirPrivate(dataDir);
        let started = performance.now();
        const runsc = await ensureRunsc({
          dataDir,
          logger,
          onProgress: (msg) => status.line(`runsc: ${msg}`),
        });
        status.done();
        const fix =
          (runsc.netnsFix === "patched-binary" ? ", root-netns check patched" : "") +
          (runsc.idleFix === "patched-binary" ? ", idle wake-ups patched" : "");
        process.stdout.write(
          `runsc ${runsc.version} (${runsc.source}, ${runsc.platform}${fix}) ${runsc.path} [${seconds(started)}]\n`,
        );
        started = performance.now();
        const template = await ensureBaseTemplate({
          dataDir,
          logger,
          onProgress: (ev) => status.template(ev),
        });
        status.done();
        const how = template.reused ? "reused" : "built";
        process.stdout.write(
          `base template ${template.hash} ${how}: ${template.rootfs} [${seconds(started)}]\n`,
        );
        if (process.env.MOAT_CODE_INTERPRETER !== "off") {
          started = performance.now();
          // Sandboxes of every other template work without it: a failure is reported, not fatal.
          try {
            const ci = await ensureCodeInterpreter(dataDir, runsc, template, logger, (m) =>
              status.transient(`code-interpreter: ${m}`),
            );
            status.done();
            process.stdout.write(`code-interpreter template ${ci.buildID} ${ci.how} [${seconds(started)}]\n`);
          } catch (err) {
            status.done();
            const message = err instanceof Error ? err.message : String(err);
            const hint = /connect to|No route to host|Temporary failure resolving/.test(message)
              ? " Build sandboxes could not reach the Debian mirror: where it is on a private or reserved address, allow it, e.g. MOAT_EGRESS_ALLOW=<address>:80."
              : "";
            process.stderr.write(
              `code-interpreter template not built (moat setup and moat up try again): ${message}${hint}\n`,
            );
          }
        }
      } catch (err) {
        status.done();
        process.stderr.write(`moat setup failed: ${err instanceof Error ? err.message : String(err)}\n`);
        if (!(err instanceof SetupError) && err instanceof Error && err.stack)
          logger.error({ err }, "setup failed");
        process.exitCode = 1;
      }
    });
}

/**
 * The code-interpreter template is built by the template builder, in build sandboxes: that takes
 * an orchestrator, and one orchestrator per host (the host lock), so a build waits for a running
 * one to stop. A build already there needs neither.
 */
async function ensureCodeInterpreter(
  dataDir: string,
  runsc: RunscInstall,
  base: BaseTemplate,
  logger: Logger,
  say: (message: string) => void,
): Promise<{ buildID: string; how: string }> {
  const templates = new TemplateStore(dataDir, base.rootfs);
  const buildID = codeInterpreterBuildID(base.rootfs);
  if (templates.readBuild(buildID)) return { buildID, how: "reused" };
  for (let waited = 0; ; waited++) {
    try {
      const orchestrator = await startOrchestrator({
        dataDir,
        port: 0,
        host: "127.0.0.1",
        logger,
        runscBinary: runsc.path,
        platform: runsc.platform,
        templates,
        poolSize: 0,
        networkPoolSize: 0,
        prepareTemplates: [],
      });
      try {
        const result = await orchestrator.ensureCodeInterpreter(say, { prepare: false });
        return { buildID: result.buildID, how: result.reused ? "reused" : "built" };
      } finally {
        await orchestrator.close();
      }
    } catch (err) {
      if (!(err instanceof HostLockedError)) throw err;
      if (waited % 30 === 0)
        say(`waiting for the orchestrator running on this host (pid ${err.pid}) to stop`);
      await sleep(2_000);
    }
  }
}

function seconds(since: number): string {
  return `${((performance.now() - since) / 1000).toFixed(1)} s`;
}
