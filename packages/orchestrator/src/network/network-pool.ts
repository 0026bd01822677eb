import type { Logger } from "@moat/shared";
import { createSandboxNetwork, destroySandboxNetwork, type NetworkOptions } from "./sandbox-network.js";
import type { Slot } from "./slot.js";
import type { SlotPool } from "./slot-pool.js";

/** What the pool does to the host; the real one runs `ip` and `nft`, tests pass a fake. */
export interface NetworkHost {
  /** Makes a slot's whole network, or nothing (it removes what it made on failure). */
  create(slot: Slot, options: NetworkOptions): Promise<void>;
  destroy(slot: Slot): Promise<void>;
}

export const hostNetworks: NetworkHost = {
  create: createSandboxNetwork,
  destroy: destroySandboxNetwork,
};

/** A slot whose network is made, held until `release` (which destroys the network, then frees the slot). */
export interface NetworkLease {
  readonly slot: Slot;
  release(): Promise<void>;
}

export interface NetworkPoolOptions {
  slots: SlotPool;
  host?: NetworkHost;
  /** Networks with internet access made ahead of time; 0 makes every one on demand. */
  size: number;
  logger: Logger;
  /** Refills wait while this says the node is busy starting sandboxes. */
  busy: () => boolean;
  /** Outbound connections per sandbox (network/sandbox-network.ts). */
  maxConnections?: number;
}

/**
 * Hands out slots whose network is ready, with their release. Networks with internet access, the
 * common case, are made ahead of time (two namespaces, veths, NAT: ~45 ms of `ip` and `nft` calls),
 * so that a create or a resume takes one instead of waiting; others are made on demand. Nothing on
 * disk names the ready ones: after a crash, the next start reaps them like any slot no record owns.
 */
export class NetworkPool {
  private readonly ready: Slot[] = [];
  private readonly host: NetworkHost;
  private filling = false;
  private closed = false;

  constructor(private readonly options: NetworkPoolOptions) {
    this.host = options.host ?? hostNetworks;
  }

  /** A slot with its network made as asked: a ready one when it fits, else one made now. */
  async acquire(request: { allowInternetAccess: boolean }): Promise<NetworkLease> {
    const ready = request.allowInternetAccess ? this.ready.shift() : undefined;
    if (ready) {
      this.fill();
      return this.lease(ready);
    }
    const slot = this.options.slots.acquire();
    try {
      await this.host.create(slot, {
        allowInternetAccess: request.allowInternetAccess,
        maxConnections: this.options.maxConnections,
      });
    } catch (err) {
      this.options.slots.release(slot);
      throw err;
    }
    return this.lease(slot);
  }

  /** The lease of a slot whose network outlived the process before (a sandbox adopted after a restart). */
  adopt(index: number): NetworkLease {
    return this.lease(this.options.slots.claim(index));
  }

  /** Ready networks now (for tests and metrics). */
  get readyCount(): number {
    return this.ready.length;
  }

  /** Makes networks in the background, one at a time, until `size` are ready. */
  fill(): void {
    const { options } = this;
    if (this.filling || this.closed || options.size <= 0) return;
    this.filling = true;
    void (async () => {
      try {
        while (!this.closed && this.ready.length < options.size) {
          if (options.busy()) {
            await new Promise((r) => setTimeout(r, 20));
            continue;
          }
          const slot = options.slots.acquire();
          try {
            await this.host.create(slot, {
              allowInternetAccess: true,
              maxConnections: options.maxConnections,
            });
          } catch (err) {
            options.slots.release(slot);
            throw err;
          }
          if (this.closed) await this.destroy(slot);
          else this.ready.push(slot);
        }
      } catch (err) {
        options.logger.warn({ err }, "making a network ahead of time failed; creates make their own");
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

  private lease(slot: Slot): NetworkLease {
    let released: Promise<void> | undefined;
    return {
      slot,
      release: () => {
        released ??= this.destroy(slot);
        return released;
      },
    };
  }

  private async destroy(slot: Slot): Promise<void> {
    try {
      await this.host.destroy(slot);
    } finally {
      this.options.slots.release(slot);
    }
  }
}
