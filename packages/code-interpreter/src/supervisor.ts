/**
 * What a code-interpreter sandbox's start command runs: the Jupyter server (loopback only) and the
 * code-interpreter server, each restarted within a second or two when it dies. The Jupyter server
 * runs in a process group of its own, so its kernels go with it instead of lingering as orphans.
 */
import { type ChildProcess, spawn } from "node:child_process";
import path from "node:path";

export interface SupervisorOptions {
  /** The unix socket the Jupyter server listens on (nothing on TCP). */
  jupyterSocket: string;
  /** The code-interpreter server: this program with `serve`. */
  serverArgv: string[];
  /** moat's kernel-side files (jupyter_launch.py). */
  supportDir: string;
  log(message: string): void;
}

export function supervise(options: SupervisorOptions): void {
  const jupyter = [
    "python3",
    path.join(options.supportDir, "jupyter_launch.py"),
    "--no-browser",
    `--ServerApp.sock=${options.jupyterSocket}`,
    "--ServerApp.sock_mode=0600",
    "--ServerApp.token=",
    "--ServerApp.password=",
    "--ServerApp.disable_check_xsrf=True",
    "--ServerApp.root_dir=/",
    // Kernels that finish a long execution while nobody listens keep their output to themselves.
    "--MappingKernelManager.buffer_offline_messages=False",
    // Output is not dropped for its rate: the server passes it on as fast as the client reads
    // (and ends an execution whose single message is too big to hold, with an error).
    "--ServerApp.iopub_data_rate_limit=0",
    "--ServerApp.iopub_msg_rate_limit=0",
    // Jupyter's restarter takes a kernel restored from a snapshot for dead and replaces it (state
    // lost); the server restarts kernels whose process really ended (contexts.ts, alive()).
    "--KernelManager.autorestart=False",
    // Kernels over unix sockets: libzmq aborts (stream_engine_base.cpp `_decoder` assertion) on
    // TCP connections a gVisor checkpoint cut, which would take the Jupyter server and its
    // kernels down on every restore.
    "--KernelManager.transport=ipc",
  ];
  keep("jupyter", jupyter, options, true);
  keep("server", options.serverArgv, options, false);
}

function keep(name: string, argv: string[], options: SupervisorOptions, group: boolean): void {
  let failures = 0;
  const start = () => {
    const started = Date.now();
    const child: ChildProcess = spawn(argv[0]!, argv.slice(1), {
      stdio: ["ignore", "inherit", "inherit"],
      detached: group,
      // Quiets debugpy's warning on every kernel start (Debian's Python uses frozen modules).
      env: { ...process.env, PYDEVD_DISABLE_FILE_VALIDATION: "1" },
    });
    options.log(`${name} started (pid ${child.pid})`);
    child.once("error", (err) => options.log(`${name} could not start: ${err.message}`));
    child.once("exit", (code, signal) => {
      if (group && child.pid) {
        try {
          process.kill(-child.pid, "SIGKILL");
        } catch {}
      }
      failures = Date.now() - started > 30_000 ? 0 : failures + 1;
      const delay = Math.min(500 * 2 ** Math.min(failures, 4), 5_000);
      options.log(`${name} exited (${signal ?? code}); restarting in ${delay} ms`);
      setTimeout(start, delay);
    });
  };
  start();
}
