import type { Logger } from "@moat/shared";

export type FaultKind = "error" | "crash";

/**
 * Failure injection for tests (MOAT_FAULTS): a named step throws ("error") or the process dies
 * there ("crash"). Steps: create:<phase> and resume:<phase> once a boot phase is done (rootfs:
 * the network and the root filesystem, made side by side; runtime; envdReady), create:init, create:running, pause:frozen, pause:checkpointed,
 * pause:committed, resume:restored, snapshot:restored, snapshot:checkpointed, for snapshots of
 * sandboxes (and forks) sandbox-snapshot:stopped (saved, the sandbox still stopped in place),
 * sandbox-snapshot:taken (not yet committed) and sandbox-snapshot:restored, and in template
 * builds build:sandbox (a step's sandbox is up), build:layer (its layer made, not yet in place)
 * and build:committed (the manifest written, no snapshot yet).
 */
export class Faults {
  constructor(
    private readonly faults: ReadonlyMap<string, FaultKind> | undefined,
    private readonly logger: Logger,
  ) {}

  /** Injects the fault named for `step`, if any. */
  at(step: string): void {
    const kind = this.faults?.get(step);
    if (!kind) return;
    this.logger.warn({ step, kind }, "injected fault");
    if (kind === "crash") process.kill(process.pid, "SIGKILL");
    throw new Error(`injected fault at ${step}`);
  }

  /** `lap`, then the fault `<operation>:<phase>` after each boot phase. */
  after(operation: string, lap: (phase: string) => void): (phase: string) => void {
    return (phase) => {
      lap(phase);
      this.at(`${operation}:${phase}`);
    };
  }
}
