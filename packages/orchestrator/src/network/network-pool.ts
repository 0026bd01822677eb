import type { Logger } from "@moat/shared";
import { createSandboxNetwork, destroySandboxNetwork } from "./sandbox-network.js";
import type { Slot } from "./slot.js";
import type { SlotPool } from "./slot-pool.js";

/**
 * Sandbox networks made ahead of time (two namespaces, veths, NAT: ~45 ms of `ip` and `nft`
 * calls), so that a create or a resume takes one instead of waiting for it. They are made with
 * internet access on, the common case; other creates make their own. Nothing on disk names them:
 * after a crash, the next start reaps them like any slot no record owns.
 */
export class NetworkPool {
  private readonly ready: Slot[] = [];
  private filling = false;
  private closed = false;

  constructor(
    private readonly slots: SlotPool,
    private readonly size: number,
    private readonly logger: Logger,
    /** Refills wait while this says the node is busy starting sandboxes. */
    private readonly busy: () => boolean,
    private readonly maxConnections?: number,
  ) {}

  /** A slot whose network (internet access on) is made, or undefined when none is ready. */
  take(): Slot | undefined {
    const slot = this.ready.shift();
    if (slot) this.fill();
    return slot;
  }

  /** Makes networks in the background, one at a time, until `size` are ready. */
  fill(): void {
    if (this.filling || this.closed || this.size <= 0) return;
    this.filling = true;
    void (async () => {
      try {
        while (!this.closed && this.ready.length < this.size) {
          if (this.busy()) {
            await new Promise((r) => setTimeout(r, 20));
            continue;
          }
          const slot = this.slots.acquire();
          try {
            await createSandboxNetwork(slot, {
              allowInternetAccess: true,
              maxConnections: this.maxConnections,
            });
          } catch (err) {
            this.slots.release(slot);
            throw err;
          }
          if (this.closed) await this.destroy(slot);
          else this.ready.push(slot);
        }
      } catch (err) {
        this.logger.warn({ err }, "making a network ahead of time failed; creates make their own");
      } finally {
        this.filling = false;
      }
    })();
  }

  /** Destroys the networks nobody took (node stop). */
  async close(): Promise<void> {
    this.closed = true;
    while (this.filling) await new Promise((r) => setTimeout(r, 10));
    await Promise.allSettled(this.ready.splice(0).map((slot) => this.destroy(slot)));
  }

  private async destroy(slot: Slot): Promise<void> {
    try {
      await destroySandboxNetwork(slot);
    } finally {
      this.slots.release(slot);
    }
  }
}
