/**
 * The creates this API process has in flight on a node. A node's FAILED or KILLED event for a
 * sandbox it is still creating is the create's to handle, not the node watcher's: the create
 * tries another node (sandbox/create.ts) instead of failing the user's request on a record the
 * watcher closed under it. Another live process's create is left to that process (its own watcher
 * sees the same event); a dead one's is closed by abandoned-creates.ts.
 */
import type { SandboxRow } from "../db/schema.js";

export class CreatesInFlight {
  /** Per sandbox: the node asked now, and why that node stopped it, once it said so. */
  private readonly attempts = new Map<string, { nodeID: string; stopped?: string }>();

  /** The create of `sandboxID` asks `nodeID` now. */
  begin(sandboxID: string, nodeID: string): void {
    this.attempts.set(sandboxID, { nodeID });
  }

  /** The node answered: why it stopped the sandbox meanwhile, or undefined when it did not. */
  end(sandboxID: string): string | undefined {
    const attempt = this.attempts.get(sandboxID);
    this.attempts.delete(sandboxID);
    return attempt?.stopped;
  }

  /**
   * A stop event of `nodeID` for `row`'s sandbox: true when a create handles it (the watcher
   * leaves the record alone), false when the record is the watcher's to close.
   */
  takeStop(row: SandboxRow | undefined, nodeID: string, reason: string, instanceID: string): boolean {
    if (row?.state !== "starting") return false;
    const attempt = this.attempts.get(row.sandbox_id);
    if (attempt?.nodeID === nodeID) {
      attempt.stopped = reason;
      return true;
    }
    return row.api_instance_id !== null && row.api_instance_id !== instanceID;
  }
}
