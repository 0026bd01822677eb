import { Command } from "commander";
import { envdCommand } from "./commands/envd.js";

const program = new Command("moat").description("Sandbox infrastructure for AI agents, compatible with E2B");
program.addCommand(envdCommand());
await program.parseAsync(process.argv);
