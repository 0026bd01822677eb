import { Command } from "commander";
import { apiCommand } from "./commands/api.js";
import { doctorCommand } from "./commands/doctor.js";
import { envdCommand } from "./commands/envd.js";
import { keysCommand } from "./commands/keys.js";
import { nodeCommand } from "./commands/node.js";
import { orchestratorCommand } from "./commands/orchestrator.js";
import { proxyCommand } from "./commands/proxy.js";
import { sandboxesCommand } from "./commands/sandboxes.js";
import { setupCommand } from "./commands/setup.js";
import { statusCommand } from "./commands/status.js";
import { teamsCommand } from "./commands/teams.js";
import { upCommand } from "./commands/up.js";
import { withConfigFiles } from "./config/file.js";

/** Every `moat` command, each with `--config`. */
export function moatProgram(): Command {
  const program = new Command("moat").description(
    "Sandbox infrastructure for AI agents, compatible with E2B",
  );
  program.addCommand(upCommand());
  program.addCommand(envdCommand());
  program.addCommand(setupCommand());
  program.addCommand(doctorCommand());
  program.addCommand(orchestratorCommand());
  program.addCommand(apiCommand());
  program.addCommand(proxyCommand());
  program.addCommand(nodeCommand());
  program.addCommand(statusCommand());
  program.addCommand(sandboxesCommand());
  program.addCommand(keysCommand());
  program.addCommand(teamsCommand());
  return withConfigFiles(program);
}
