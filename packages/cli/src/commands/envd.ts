import { runEnvd } from "@moat/envd";
import { ENVD_PORT } from "@moat/shared";
import { Command } from "commander";
import { parsePort } from "../args/port.js";

/** `moat envd`: runs the in-sandbox daemon standalone (the orchestrator starts it inside sandboxes). */
export function envdCommand(): Command {
  return new Command("envd")
    .description("run envd, the in-sandbox daemon speaking E2B's envd protocol")
    .option("--port <port>", "port to listen on", parsePort, ENVD_PORT)
    .option("--host <host>", "address to listen on", "0.0.0.0")
    .option(
      "--default-user <name>",
      "user for requests that name none (default: user if it exists, else root)",
    )
    .option("--set-clock", "let /init set the system clock (inside a sandbox only)", false)
    .action((opts: { port: number; host: string; defaultUser?: string; setClock: boolean }) => runEnvd(opts));
}
