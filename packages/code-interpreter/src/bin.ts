/**
 * The code interpreter's entry, bundled into envd's sandbox directory (code-interpreter.mjs):
 * `serve` is the server on port 49999 (the template's start command runs it in a loop that
 * restarts it; the kernels outlive it and a new server adopts them).
 */

import path from "node:path";
import { startServer } from "./server.js";

const PORT = Number(process.env.MOAT_CODE_INTERPRETER_PORT || 49999);
const RUNTIME_DIR = process.env.MOAT_KERNELS_DIR || "/tmp/.moat-kernels";
const ENVD_URL = process.env.MOAT_ENVD_URL || "http://127.0.0.1:49983";

const log = (message: string) =>
  process.stderr.write(`${new Date().toISOString()} code-interpreter server: ${message}\n`);

// Beside this bundle (scripts/bundle-envd.js copies python/ there).
const SUPPORT_DIR = path.join(path.dirname(process.argv[1]!), "code-interpreter");

const command = process.argv[2] ?? "serve";
if (command === "serve") {
  await startServer({
    port: PORT,
    host: "0.0.0.0",
    runtimeDir: RUNTIME_DIR,
    envdURL: ENVD_URL,
    supportDir: SUPPORT_DIR,
    log,
  });
} else {
  process.stderr.write("usage: code-interpreter.mjs serve\n");
  process.exit(2);
}
