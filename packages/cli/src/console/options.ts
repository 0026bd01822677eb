import { LOG_FORMATS } from "@moat/shared";
import { type Command, Option } from "commander";
import { versionText } from "./version.js";

/**
 * `moat --version` / `-V`, and `--log-format pretty|json` (MOAT_LOG_FORMAT, or `logFormat` in
 * the config file) on every command: pretty on a terminal and JSON otherwise unless set.
 */
export function withConsoleOptions(program: Command): Command {
  program.option("-V, --version", "print moat's version and exit").on("option:version", () => {
    process.stdout.write(`${versionText()}\n`);
    process.exit(0);
  });
  for (const command of program.commands) {
    command.addOption(
      new Option(
        "--log-format <format>",
        "log lines: pretty (default on a terminal) or json (default otherwise)",
      )
        .choices(LOG_FORMATS)
        .env("MOAT_LOG_FORMAT"),
    );
    // After the config file's hook (registered first), so a file's logFormat counts too.
    command.hook("preAction", (cmd) => {
      const format = cmd.opts().logFormat as string | undefined;
      if (format) process.env.MOAT_LOG_FORMAT = format;
    });
  }
  return program;
}
