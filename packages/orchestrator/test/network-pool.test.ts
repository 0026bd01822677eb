import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { createNoopLogger } from "@moat/shared";
import { type NetworkHost, NetworkPool } from "../src/network/network-pool.js";
import type { NetworkOptions } from "../src/network/sandbox-network.js";
import type { Slot } from "../src/network/slot.js";
import { SlotPool } from "../src/network/slot-pool.js";

/** Networks as a set of slot indexes, with internet access or not. */
class FakeHost implements NetworkHost {
  readonly made = new Map<number, boolean>();
  failNext = false;
  async create(slot: Slot, options: NetworkOptions): Promise<void> {
    if (this.failNext) {
      this.failNext = false;
      throw new Error("ip failed");
    }
    this.made.set(slot.index, options.allowInternetAccess);
  }
  async destroy(slot: Slot): Promise<void> {
    this.made.delete(slot.index);
  }
}

async function until(check: () => boolean): Promise<void> {
  for (let i = 0; i < 200 && !check(); i++) await new Promise((r) => setTimeout(r, 5));
  assert.ok(check());
}

describe("network pool", () => {
  test("hands out ready networks with internet access, makes the others, and refills", async () => {
    const host = new FakeHost();
    const slots = new SlotPool(100, 0);
    const pool = new NetworkPool({ slots, host, size: 2, logger: createNoopLogger(), busy: () => false });
    pool.fill();
    await until(() => pool.readyCount === 2);
    const open = await pool.acquire({ allowInternetAccess: true });
    assert.equal(host.made.get(open.slot.index), true);
    await until(() => pool.readyCount === 2);
    const closed = await pool.acquire({ allowInternetAccess: false });
    assert.equal(host.made.get(closed.slot.index), false, "made for it, not taken from the ready ones");
    assert.equal(pool.readyCount, 2);
    assert.equal(slots.used, 4);
    await open.release();
    await open.release();
    await closed.release();
    assert.equal(slots.used, 2, "released leases free their slots, once");
    await pool.close();
    assert.equal(host.made.size, 0);
    assert.equal(slots.used, 0);
  });

  test("a network that cannot be made frees its slot; an adopted one is released like any", async () => {
    const host = new FakeHost();
    const slots = new SlotPool(100, 0);
    const pool = new NetworkPool({ slots, host, size: 0, logger: createNoopLogger(), busy: () => false });
    host.failNext = true;
    await assert.rejects(pool.acquire({ allowInternetAccess: true }), /ip failed/);
    assert.equal(slots.used, 0);
    host.made.set(42, true);
    const adopted = pool.adopt(42);
    assert.equal(slots.used, 1);
    await adopted.release();
    assert.equal(host.made.size, 0);
    assert.equal(slots.used, 0);
  });

  test("refills wait while the node is busy starting sandboxes", async () => {
    const host = new FakeHost();
    let busy = true;
    const pool = new NetworkPool({
      slots: new SlotPool(10, 0),
      host,
      size: 1,
      logger: createNoopLogger(),
      busy: () => busy,
    });
    pool.fill();
    await new Promise((r) => setTimeout(r, 60));
    assert.equal(pool.readyCount, 0);
    busy = false;
    await until(() => pool.readyCount === 1);
    await pool.close();
  });
});
