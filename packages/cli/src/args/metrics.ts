import { checkMetricsInterval, checkRetentionHours } from "@moat/orchestrator";
import { InvalidArgumentError, Option } from "commander";

/** `--metrics-interval`: how often the node samples each running sandbox's metrics. */
export function metricsIntervalOption(): Option {
  return new Option(
    "--metrics-interval <seconds>",
    "seconds between samples of each running sandbox's CPU, memory and disk (default 5; 0: off)",
  )
    .env("MOAT_METRICS_INTERVAL")
    .argParser(parseInterval);
}

/** `--metrics-retention`: how long the node keeps the samples. */
export function metricsRetentionOption(): Option {
  return new Option(
    "--metrics-retention <hours>",
    "hours the samples are kept, also after the sandbox ends (default 24)",
  )
    .env("MOAT_METRICS_RETENTION_HOURS")
    .argParser(parseRetention);
}

function parseInterval(value: string): number {
  try {
    return checkMetricsInterval(value, "--metrics-interval");
  } catch (err) {
    throw new InvalidArgumentError((err as Error).message);
  }
}

function parseRetention(value: string): number {
  try {
    return checkRetentionHours(value, "--metrics-retention");
  } catch (err) {
    throw new InvalidArgumentError((err as Error).message);
  }
}
