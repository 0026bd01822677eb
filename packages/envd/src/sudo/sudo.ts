/**
 * `sudo` for sandboxes. gVisor runs every container with no-new-privileges, so the setuid
 * /usr/bin/sudo cannot raise privileges. This stand-in, mounted over /usr/local/bin/sudo, asks the
 * sandbox's own envd (over loopback, which envd trusts as passwordless sudo) to run the command as
 * the target user, relays stdin, stdout and stderr, forwards SIGINT/SIGTERM and exits with the
 * command's status. Supports `sudo [-u user] [-E] [-H] [-n] [-i|-s] [--] command [args…]`.
 */
import { createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { ENVD_PORT } from "@moat/shared";
import { Process, Signal } from "@moat/shared/gen/envd/process";

interface SudoArgs {
  user: string;
  preserveEnv: boolean;
  login: boolean;
  shell: boolean;
  command: string[];
}

export function parseSudoArgs(argv: string[]): SudoArgs {
  const out: SudoArgs = { user: "root", preserveEnv: false, login: false, shell: false, command: [] };
  let i = 0;
  for (; i < argv.length; i++) {
    const arg = argv[i]!;
    if (arg === "--") {
      i++;
      break;
    }
    if (!arg.startsWith("-") || arg === "-") break;
    if (arg === "-u" || arg === "--user") out.user = argv[++i] ?? "root";
    else if (arg.startsWith("--user=")) out.user = arg.slice(7);
    else if (arg.startsWith("-u") && arg.length > 2) out.user = arg.slice(2);
    else if (arg === "-E" || arg === "--preserve-env") out.preserveEnv = true;
    else if (arg === "-i" || arg === "--login") out.login = true;
    else if (arg === "-s" || arg === "--shell") out.shell = true;
    else if (["-H", "-n", "-S", "-k", "-K", "--non-interactive", "--set-home"].includes(arg)) continue;
    else if (/^-[EHnSkKis]+$/.test(arg)) {
      if (arg.includes("E")) out.preserveEnv = true;
      if (arg.includes("i")) out.login = true;
      if (arg.includes("s")) out.shell = true;
    } else throw new Error(`sudo: option '${arg}' is not supported in moat sandboxes`);
  }
  out.command = argv.slice(i);
  return out;
}

/** The argv envd starts: the command itself, or a (login) shell running it. */
export function targetArgv(args: SudoArgs): { cmd: string; args: string[] } {
  if (args.login || args.shell || args.command.length === 0) {
    const shellArgs = args.login ? ["-l"] : [];
    return args.command.length === 0
      ? { cmd: "/bin/bash", args: shellArgs }
      : { cmd: "/bin/bash", args: [...shellArgs, "-c", args.command.join(" ")] };
  }
  return { cmd: args.command[0]!, args: args.command.slice(1) };
}

export async function runSudo(argv: string[]): Promise<number> {
  const args = parseSudoArgs(argv);
  const target = targetArgv(args);
  const client = createClient(
    Process,
    createConnectTransport({ baseUrl: `http://127.0.0.1:${ENVD_PORT}`, httpVersion: "1.1" }),
  );
  const env: Record<string, string> = {};
  if (args.preserveEnv) for (const [k, v] of Object.entries(process.env)) if (v !== undefined) env[k] = v;
  const abort = new AbortController();
  const stream = client.start(
    { process: { cmd: target.cmd, args: target.args, envs: env, cwd: process.cwd() }, stdin: true },
    {
      headers: { authorization: `Basic ${Buffer.from(`${args.user}:`).toString("base64")}` },
      signal: abort.signal,
    },
  );
  let pid: number | undefined;
  const forwardSignal = (signal: Signal) => {
    if (pid !== undefined)
      void client.sendSignal({ process: { selector: { case: "pid", value: pid } }, signal });
  };
  process.on("SIGINT", () => forwardSignal(Signal.SIGTERM));
  process.on("SIGTERM", () => forwardSignal(Signal.SIGTERM));

  for await (const res of stream) {
    const event = res.event?.event;
    if (event?.case === "start") {
      pid = event.value.pid;
      relayStdin(client, pid);
    } else if (event?.case === "data") {
      const out = event.value.output;
      if (out.case === "stdout") process.stdout.write(out.value);
      else if (out.case === "stderr") process.stderr.write(out.value);
    } else if (event?.case === "end") {
      return event.value.exited ? event.value.exitCode : 128 + 9;
    }
  }
  return 1;
}

/** Forwards this process's stdin to the command; EOF closes the command's stdin. */
function relayStdin(client: ReturnType<typeof createClient<typeof Process>>, pid: number): void {
  const selector = { selector: { case: "pid" as const, value: pid } };
  if (process.stdin.isTTY) {
    // An interactive terminal would need a pty; commands under sudo read no terminal input here.
    void client.closeStdin({ process: selector }).catch(() => undefined);
    return;
  }
  // Input sent after the command ended has nowhere to go: those failures are expected.
  const ignore = () => undefined;
  let chain = Promise.resolve();
  process.stdin.on("data", (chunk: Buffer) => {
    chain = chain.then(() =>
      client
        .sendInput({ process: selector, input: { input: { case: "stdin", value: chunk } } })
        .then(ignore, ignore),
    );
  });
  process.stdin.on("end", () => {
    chain = chain.then(() => client.closeStdin({ process: selector }).then(ignore, ignore));
  });
  process.stdin.on("error", () => undefined);
}
