/**
 * The code interpreter's entry, bundled into envd's sandbox directory (code-interpreter.mjs):
 * `supervise` (the template's start command) keeps `serve` running;
 * `serve` is the server on port 49999.
 */

import path from "node:path";
import { startServer } from "./server.js";
import { supervise } from "./supervisor.js";

const PORT = Number(process.env.MOAT_CODE_INTERPRETER_PORT || 49999);
const RUNTIME_DIR = process.env.MOAT_KERNELS_DIR || "/tmp/.moat-kernels";
const ENVD_URL = process.env.MOAT_ENVD_URL || "http://127.0.0.1:49983";

const log = (role: string) => (message: string) =>
  process.stderr.write(`${new Date().toISOString()} code-interpreter ${role}: ${message}\n`);

// Beside this bundle (scripts/bundle-envd.js copies python/ there).
const SUPPORT_DIR = path.join(path.dirname(process.argv[1]!), "code-interpreter");

const command = process.argv[2] ?? "serve";
if (command === "supervise") {
  supervise({
    serverArgv: [process.execPath, process.argv[1]!, "serve"],
    log: log("supervisor"),
  });
} else if (command === "serve") {
  await startServer({
    port: PORT,
    host: "0.0.0.0",
    runtimeDir: RUNTIME_DIR,
    envdURL: ENVD_URL,
    supportDir: SUPPORT_DIR,
    log: log("server"),
  });
} else {
  process.stderr.write(`usage: code-interpreter.mjs [serve|supervise]\n`);
  process.exit(2);
}
