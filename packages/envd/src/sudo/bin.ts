import { runSudo } from "./sudo.js";

try {
  process.exitCode = await runSudo(process.argv.slice(2));
} catch (err) {
  process.stderr.write(`${err instanceof Error ? err.message : String(err)}\n`);
  process.exitCode = 1;
}
// Pending stdin reads must not keep the command alive after it ended.
process.stdin.destroy();
