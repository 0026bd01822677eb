import { CleanupStack } from "@moat/shared";
import type { Slot } from "../network/slot.js";
import type { SandboxRecord } from "./record.js";
import { canMove, IllegalStateChangeError, type SandboxKind, type SandboxState } from "./state.js";

export type { SandboxKind, SandboxState } from "./state.js";

/**
 * A sandbox on this node and every OS resource it holds, on two cleanup stacks: `runtime` holds
 * what the current run took (slot, network, rootfs mount, runsc container) and is released by a
 * pause as by a kill; `cleanup` holds what lives as long as the sandbox (its directory with the
 * writable layer and memory image, its registry entry) and is released by a kill only.
 */
export class Sandbox {
  slot: Slot | undefined;
  runtime = new CleanupStack();
  /** Host pid of the runsc sandbox process, watched so that a sandbox that dies is noticed. */
  runtimePID: number | undefined;
  /** Settles when the create that made this sandbox finished, either way. */
  readonly started: Promise<void>;
  /** The pause or resume in flight; a kill waits for it. */
  transition: Promise<unknown> | undefined;
  /** The kill under way until it answered; a second kill answers with it. */
  stopping: Promise<void> | undefined;
  /**
   * The current run's container may be deleted after its release returns: its process stopped
   * with a checkpoint, or a pause released it (a new run gets a new container).
   */
  backgroundDelete = false;
  /**
   * Adopted by a restart while a pause of the process before was under way: that process's runsc
   * checkpoint may still be running, and stops the runtime when it ends. If the runtime exits, the
   * sandbox is paused with its files, not released as crashed.
   */
  pauseInterrupted?: boolean;
  private current: SandboxState;
  private settleStart!: () => void;
  private endTimer: NodeJS.Timeout | undefined;

  constructor(
    public record: SandboxRecord,
    readonly dir: string,
    readonly cleanup: CleanupStack,
    initial: SandboxState = "starting",
  ) {
    this.current = initial;
    this.started = new Promise((resolve) => {
      this.settleStart = resolve;
    });
  }

  get state(): SandboxState {
    return this.current;
  }

  /** Moves to `to` as the state table allows (sandbox/state.ts); any other move is a bug. */
  moveTo(to: SandboxState): void {
    if (!canMove(this.current, to)) throw new IllegalStateChangeError(this.id, this.current, to);
    this.current = to;
  }

  /** What the sandbox is for; a claimed pool entry becomes a user's. */
  get kind(): SandboxKind {
    return this.record.kind ?? (this.record.state === "pooled" ? "pool" : "user");
  }

  /** Called by the create (or the adopt) that made this sandbox once it is done. */
  markStarted(): void {
    this.settleStart();
  }

  get id(): string {
    return this.record.sandboxID;
  }

  /** Where the host reaches the sandbox; empty while it has no network (paused). */
  get hostAddress(): string {
    return this.slot?.hostAddress ?? "";
  }

  get endTime(): Date {
    return new Date(this.record.endTime);
  }

  /** Arms (or re-arms) the timer that ends the sandbox at its end time. */
  scheduleEnd(onEnd: () => void): void {
    this.clearEnd();
    // setTimeout caps at ~24.8 days; re-arm in steps for longer lives.
    const delay = Math.max(0, this.endTime.getTime() - Date.now());
    const step = Math.min(delay, 2 ** 31 - 1);
    this.endTimer = setTimeout(() => (step < delay ? this.scheduleEnd(onEnd) : onEnd()), step);
    this.endTimer.unref();
  }

  clearEnd(): void {
    if (this.endTimer) clearTimeout(this.endTimer);
    this.endTimer = undefined;
  }
}
