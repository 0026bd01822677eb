/**
 * envd's standalone entry, bundled into one file (dist/envd.mjs) that sandboxes run: one file to
 * load instead of hundreds keeps envd's start, which every sandbox create waits for, short.
 * `moat envd` runs the same daemon from the CLI.
 */
import { parseArgs } from "node:util";
import { createLogger, ENVD_PORT } from "@moat/shared";
import { startEnvd } from "./server.js";

export interface RunEnvdOptions {
  port: number;
  host: string;
  defaultUser?: string;
  setClock: boolean;
  setHostname?: boolean;
  trustLoopback?: boolean;
}

/** Starts envd with a structured logger and stops it cleanly on SIGTERM/SIGINT. */
export async function runEnvd(options: RunEnvdOptions): Promise<void> {
  const logger = createLogger("envd");
  const envd = await startEnvd({ ...options, logger });
  const stop = (signal: string) => {
    logger.info({ signal }, "envd stopping");
    envd.close().then(
      () => process.exit(0),
      (err: unknown) => {
        logger.error({ err }, "envd failed to stop cleanly");
        process.exit(1);
      },
    );
  };
  process.once("SIGTERM", () => stop("SIGTERM"));
  process.once("SIGINT", () => stop("SIGINT"));
}

export function parseEnvdArgs(argv: string[]): RunEnvdOptions {
  const { values } = parseArgs({
    args: argv,
    options: {
      port: { type: "string", default: String(ENVD_PORT) },
      host: { type: "string", default: "0.0.0.0" },
      "default-user": { type: "string" },
      "set-clock": { type: "boolean", default: false },
      "set-hostname": { type: "boolean", default: false },
      "trust-loopback": { type: "boolean", default: false },
    },
  });
  const port = Number(values.port);
  if (!Number.isInteger(port) || port < 0 || port > 65535) throw new Error(`invalid --port '${values.port}'`);
  return {
    port,
    host: values.host!,
    defaultUser: values["default-user"],
    setClock: values["set-clock"]!,
    setHostname: values["set-hostname"]!,
    trustLoopback: values["trust-loopback"]!,
  };
}
