import {
  defaultDataDir,
  ensureBaseTemplate,
  ensureRunsc,
  SetupError,
  type TemplateProgress,
} from "@moat/orchestrator";
import { createLogger, makeDataDirPrivate } from "@moat/shared";
import { Command } from "commander";

/**
 * `moat setup`: installs what sandboxes need under the data dir (runsc, the base template). Quick
 * when already done; `.ci/run` and `moat up` call it. Progress goes to stderr, the outcome to stdout.
 */
export function setupCommand(): Command {
  return new Command("setup")
    .description("install runsc and build the base template (cached; about a minute the first time)")
    .option("--data-dir <dir>", "moat's data directory (default: $MOAT_DATA_DIR or /var/lib/moat)")
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
        const fix = runsc.netnsFix === "patched-binary" ? ", root-netns check patched" : "";
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
      } catch (err) {
        status.done();
        process.stderr.write(`moat setup failed: ${err instanceof Error ? err.message : String(err)}\n`);
        if (!(err instanceof SetupError) && err instanceof Error && err.stack)
          logger.error({ err }, "setup failed");
        process.exitCode = 1;
      }
    });
}

function seconds(since: number): string {
  return `${((performance.now() - since) / 1000).toFixed(1)} s`;
}

/** debootstrap's lines about one package (`I: Retrieving bash 5.2.15-2`, `I: Unpacking libc6:amd64...`). */
const PER_PACKAGE =
  /^I: (?:(?:Retrieving|Validating) \S+ \S*\d\S*|(?:Extracting|Unpacking|Configuring) \S+\.\.\.)$/;

/**
 * Progress on stderr. debootstrap says several lines per package: on a terminal its lines overwrite
 * one status line; in a log (CI) the per-package ones are counted instead of printed.
 */
class StatusLine {
  private open = false;
  private skipped = 0;

  constructor(private readonly out: NodeJS.WriteStream) {}

  line(text: string): void {
    this.done();
    this.out.write(`${text}\n`);
  }

  template(ev: TemplateProgress): void {
    const text = `template: ${ev.message}`;
    if (ev.phase === "debootstrap" && this.out.isTTY) {
      this.out.write(`\r\x1b[K${text.slice(0, (this.out.columns || 100) - 1)}`);
      this.open = true;
    } else if (ev.phase === "debootstrap" && PER_PACKAGE.test(ev.message)) {
      this.skipped++;
    } else {
      this.line(text);
    }
  }

  /** Ends an open status line and counts the lines left out since the last one printed. */
  done(): void {
    if (this.open) this.out.write("\n");
    this.open = false;
    if (this.skipped > 0) this.out.write(`template:   (${this.skipped} package steps)\n`);
    this.skipped = 0;
  }
}
