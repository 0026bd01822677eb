import { InvalidArgumentError, Option } from "commander";
import { parseCount } from "./count.js";

/** `--logs-retention` and `--logs-max-mb`: how long and how much of each sandbox's log the node keeps. */
export function sandboxLogsOptions(): Option[] {
  return [
    new Option(
      "--logs-retention <hours>",
      "hours a sandbox's log (its start command's output, envd's log) is kept after its last line (default: 168)",
    )
      .env("MOAT_LOGS_RETENTION_HOURS")
      .argParser(parseCount),
    new Option(
      "--logs-max-mb <mb>",
      "MiB one sandbox's log may hold; its oldest entries are dropped past it (default: 10)",
    )
      .env("MOAT_LOGS_MAX_MB")
      .argParser(parsePositive),
  ];
}

function parsePositive(value: string): number {
  const n = parseCount(value);
  if (n < 1) throw new InvalidArgumentError("expected a whole number ≥ 1");
  return n;
}
