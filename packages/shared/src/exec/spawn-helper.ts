/**
 * A small process that starts moat's host commands for it. Starting a command forks the process
 * that asks, and a fork costs in proportion to the memory it maps: from `moat up` (API, node,
 * embedded database: ~850 MB resident) a `/bin/true` takes ~35 ms, from a bare Node process ~6 ms.
 * Every kill, create, pause and resume runs several commands (nft, ip, runsc), so the node hands
 * them to this helper, forked once while moat is still small.
 *
 * The helper only spawns: every command keeps its argv, environment, working directory, input,
 * timeout and abort, and answers exactly as a child of moat would. When the helper is gone
 * (it died), commands are started by moat itself again.
 */
import { type ChildProcess, fork } from "node:child_process";
import { fileURLToPath } from "node:url";
import { failedToStart, type Outcome, type SpawnRequest } from "./run-here.js";
import type { HelperAnswer, HelperRequest } from "./spawn-helper-child.js";

interface Pending {
  resolve: (outcome: Outcome) => void;
  onOutput?: (chunk: string, stream: "stdout" | "stderr") => void;
}

export class SpawnHelper {
  private readonly pending = new Map<number, Pending>();
  private nextID = 1;
  /** Set once the helper's process is gone: commands are started in this process again. */
  gone = false;
  /** Released by its last user: it ends once the commands it runs have ended. */
  private closing = false;

  constructor(
    private readonly child: ChildProcess,
    onGone: (why: string) => void,
  ) {
    child.on("message", (answer: HelperAnswer) => {
      const waiting = this.pending.get(answer.id);
      if (!waiting) return;
      if (answer.type === "output") {
        waiting.onOutput?.(answer.chunk, answer.stream);
        return;
      }
      this.pending.delete(answer.id);
      this.idle();
      // Structured clone may hand a Buffer back as a plain Uint8Array.
      const stdout: Uint8Array = answer.outcome.stdout;
      const bytes = Buffer.isBuffer(stdout)
        ? stdout
        : Buffer.from(stdout.buffer, stdout.byteOffset, stdout.byteLength);
      waiting.resolve({ ...answer.outcome, stdout: bytes });
    });
    // Nothing of the helper keeps moat alive while no command is out.
    this.idle();
    child.once("exit", (code, signal) => {
      this.gone = true;
      const why = `moat's spawn helper exited (${signal ?? `code ${code}`})`;
      for (const waiting of this.pending.values()) {
        // The command may or may not have run: it is not started again, the caller hears why.
        waiting.resolve(failedToStart(why));
      }
      this.pending.clear();
      onGone(why);
    });
    child.on("error", () => undefined);
  }

  run(
    request: SpawnRequest,
    onOutput?: (chunk: string, stream: "stdout" | "stderr") => void,
    signal?: AbortSignal,
  ): Promise<Outcome> {
    const id = this.nextID++;
    return new Promise((resolve) => {
      const onAbort = () => this.post({ type: "cancel", id });
      this.pending.set(id, {
        resolve: (outcome) => {
          signal?.removeEventListener("abort", onAbort);
          resolve(outcome);
        },
        onOutput,
      });
      // The helper holds moat's event loop while a command is out, as a child of its own would
      // (its process for the exit that fails the command, its channel for the answer).
      this.child.ref();
      (this.child.channel as { ref?: () => void } | undefined)?.ref?.();
      this.post({ type: "run", id, request, stream: onOutput !== undefined });
      signal?.addEventListener("abort", onAbort, { once: true });
    });
  }

  /** Ends the helper once the commands it runs now have ended (a kill's release may still be out). */
  stop(): void {
    this.closing = true;
    this.idle();
  }

  private post(message: HelperRequest): void {
    if (this.child.connected) this.child.send(message);
  }

  private idle(): void {
    if (this.pending.size > 0) return;
    if (this.closing && this.child.connected) this.child.disconnect();
    this.child.unref();
    (this.child.channel as { unref?: () => void } | undefined)?.unref?.();
  }
}

let helper: SpawnHelper | undefined;
let users = 0;

/** The running helper, if one is started and alive. */
export function spawnHelper(): SpawnHelper | undefined {
  return helper && !helper.gone ? helper : undefined;
}

/**
 * Starts the helper (once per process; each caller releases its use). `onGone` hears when it
 * died unexpectedly: moat carries on, starting commands itself.
 */
export function useSpawnHelper(onGone: (why: string) => void = () => undefined): () => void {
  users++;
  if (!helper || helper.gone) {
    const script = fileURLToPath(new URL("./spawn-helper-child.js", import.meta.url));
    const { NODE_OPTIONS: _options, ...env } = process.env;
    const child = fork(script, [], {
      // None of the parent's loaders or flags: the helper is plain JavaScript and small.
      execArgv: [],
      env,
      serialization: "advanced",
      stdio: ["ignore", "inherit", "inherit", "ipc"],
    });
    const started = new SpawnHelper(child, (why) => {
      if (helper === started && users > 0) onGone(why);
    });
    helper = started;
  }
  let released = false;
  return () => {
    if (released) return;
    released = true;
    users--;
    if (users === 0 && helper) {
      helper.stop();
      helper = undefined;
    }
  };
}
