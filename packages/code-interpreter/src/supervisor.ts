/**
 * What a code-interpreter sandbox's start command runs: the code-interpreter server, restarted
 * within a second or two when it dies. Its kernels run on in their own process groups meanwhile,
 * and the restarted server adopts them (contexts.ts).
 */
import { type ChildProcess, spawn } from "node:child_process";

export interface SupervisorOptions {
  /** The code-interpreter server: this program with `serve`. */
  serverArgv: string[];
  log(message: string): void;
}

export function supervise(options: SupervisorOptions): void {
  const argv = options.serverArgv;
  let failures = 0;
  const start = () => {
    const started = Date.now();
    const child: ChildProcess = spawn(argv[0]!, argv.slice(1), { stdio: ["ignore", "inherit", "inherit"] });
    options.log(`server started (pid ${child.pid})`);
    child.once("error", (err) => options.log(`server could not start: ${err.message}`));
    child.once("exit", (code, signal) => {
      failures = Date.now() - started > 30_000 ? 0 : failures + 1;
      const delay = Math.min(500 * 2 ** Math.min(failures, 4), 5_000);
      options.log(`server exited (${signal ?? code}); restarting in ${delay} ms`);
      setTimeout(start, delay);
    });
  };
  start();
}
