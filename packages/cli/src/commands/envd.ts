import { runEnvd } from "@moat/envd";
import { ENVD_PORT } from "@moat/shared";
import { Command, InvalidArgumentError } from "commander";

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

function parsePort(value: string): number {
  const port = Number(value);
  if (!Number.isInteger(port) || port < 0 || port > 65535) {
    throw new InvalidArgumentError("expected a port number between 0 and 65535");
  }
  return port;
}
