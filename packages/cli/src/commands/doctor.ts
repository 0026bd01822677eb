import { type DoctorCheck, defaultDataDir, runDoctor } from "@moat/orchestrator";
import { Command, Option } from "commander";

/** `moat doctor`: checks the host's prerequisites and says how to fix each one that fails. */
export function doctorCommand(): Command {
  return new Command("doctor")
    .description("check that this host can run sandboxes, and say how to fix what it cannot")
    .addOption(
      new Option("--data-dir <dir>", "moat's data directory (default: /var/lib/moat)").env("MOAT_DATA_DIR"),
    )
    .addOption(
      new Option("--artifacts <location>", "also check this shared artifact storage").env("MOAT_ARTIFACTS"),
    )
    .action(async (opts: { dataDir?: string; artifacts?: string }) => {
      const checks = await runDoctor({
        dataDir: opts.dataDir ?? defaultDataDir(),
        artifacts: opts.artifacts,
      });
      process.stdout.write(formatChecks(checks));
      if (checks.some((c) => !c.ok)) process.exitCode = 1;
    });
}

/** One line per check: `ok   name: detail`, or `FIX  name: detail` with the fix on the next line. */
export function formatChecks(checks: DoctorCheck[]): string {
  return checks
    .map((c) => {
      const label = !c.ok ? "FIX " : c.warning ? "warn" : "ok  ";
      const fix = c.fix && (!c.ok || c.warning) ? `\n     → ${c.fix}` : "";
      return `${label} ${c.name}: ${c.detail}${fix}\n`;
    })
    .join("");
}
