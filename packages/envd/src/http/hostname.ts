import { type ChildProcess, execFile, spawn } from "node:child_process";
import type { Socket } from "node:net";
import { promisify } from "node:util";

const execFileAsync = promisify(execFile);

/** The sethostname(2) syscall number per Node architecture (no helper elsewhere). */
const SETHOSTNAME: Partial<Record<string, number>> = { x64: 170, arm64: 161 };

/** How long a set waits for the helper before it gives up on it and execs `hostname`. */
const HELPER_TIMEOUT_MS = 5000;

/**
 * The helper: perl (in every Debian-based template) reads one name from stdin and makes the
 * sethostname syscall; answers "ok" or the error. EOF (envd gone, or the helper dismissed) ends it
 * without a word. Undefined on an architecture without a known syscall number.
 */
export function sethostnameHelper(arch: string = process.arch): string[] | undefined {
  const nr = SETHOSTNAME[arch];
  if (nr === undefined) return undefined;
  return [
    "perl",
    "-e",
    `$|=1; my $n = <STDIN>; exit 0 unless defined $n; chomp $n; print syscall(${nr}, $n, length $n) == 0 ? "ok\\n" : "failed: $!\\n";`,
  ];
}

export interface HostnameSetterOptions {
  /** The helper's argv (default: perl with the sethostname syscall, when the architecture has one). */
  helper?: string[];
  /** The command that sets the hostname when there is no helper (the name is its last argument). */
  fallback?: string[];
}

/**
 * Sets the sandbox's hostname without an exec where it counts: an exec under gVisor costs
 * ~40 ms, and the first command after a create waits for the hostname. A helper process started
 * with envd (so the template snapshot, and every sandbox and pool entry restored from it, already
 * has it running) waits for one name and makes the syscall itself. It is used once: a later
 * rename (a sandbox restored from another's snapshot) execs `hostname`, as does every rename where
 * the helper cannot run (no perl in the template).
 */
export class HostnameSetter {
  private helper: { child: ChildProcess; answer: Promise<string> } | undefined;
  private readonly helperArgv: string[] | undefined;
  private readonly fallback: string[];

  constructor(options: HostnameSetterOptions = {}) {
    this.helperArgv = options.helper ?? sethostnameHelper();
    this.fallback = options.fallback ?? ["hostname"];
  }

  /** Starts the helper (once); a template without perl simply has none. */
  arm(): void {
    if (this.helper || !this.helperArgv) return;
    const [cmd, ...args] = this.helperArgv;
    const child = spawn(cmd!, args, {
      stdio: ["pipe", "pipe", "ignore"],
      // Locale warnings and a user's PERL5OPT have no business here.
      env: { PATH: "/usr/local/bin:/usr/bin:/bin", LC_ALL: "C" },
    });
    // Its answer line: the name is set then (it exits right after, with nothing left to do).
    const answer = new Promise<string>((resolve) => {
      let out = "";
      child.stdout!.setEncoding("utf8");
      child.stdout!.on("data", (chunk: string) => {
        out += chunk;
        if (out.includes("\n")) resolve(out.trim());
      });
      child.once("error", (err) => resolve(`failed: ${err.message}`));
      child.once("close", () => resolve(out.trim() || "failed: the helper exited without an answer"));
    });
    // A write to a helper that is gone (no perl) fails here, not as an uncaught error.
    child.stdin!.on("error", () => undefined);
    // Waiting, it holds no process open; a set takes it back (see set).
    child.unref();
    (child.stdout as Socket).unref();
    this.helper = { child, answer };
  }

  /** Whether a helper is armed (for tests and the log). */
  get armed(): boolean {
    return this.helper !== undefined;
  }

  /** Sets the hostname: through the helper when one is armed, else (or when it fails) with an exec. */
  async set(hostname: string): Promise<void> {
    const helper = this.helper;
    this.helper = undefined;
    if (helper) {
      helper.child.ref();
      (helper.child.stdout as Socket).ref();
      helper.child.stdin!.end(`${hostname}\n`);
      const timeout = new Promise<string>((resolve) => {
        setTimeout(() => resolve("failed: no answer in time"), HELPER_TIMEOUT_MS).unref();
      });
      const answer = await Promise.race([helper.answer, timeout]);
      if (answer === "ok") return;
      helper.child.kill("SIGKILL");
    }
    await execFileAsync(this.fallback[0]!, [...this.fallback.slice(1), hostname], { timeout: 5000 });
  }

  /** Ends an unused helper (envd stops, or the hostname needs no change). */
  dismiss(): void {
    this.helper?.child.stdin?.end();
    this.helper = undefined;
  }
}
