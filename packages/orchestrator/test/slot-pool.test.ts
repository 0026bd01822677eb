import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { Slot, slotIndexOf } from "../src/network/slot.js";
import { SlotPool } from "../src/network/slot-pool.js";

describe("slot pool", () => {
  test("never-used slots come first; a freed slot rests before it is reused", () => {
    let now = 0;
    const pool = new SlotPool(100, 1000, () => now);
    const a = pool.acquire();
    assert.equal(a.index, 1);
    pool.release(a);
    assert.equal(pool.acquire().index, 2, "slot 1 is resting");
    now = 1500;
    assert.equal(pool.acquire().index, 1, "slot 1 rested long enough");
  });

  test("a full node reuses the longest-rested slot, then refuses", () => {
    let now = 0;
    const pool = new SlotPool(2, 1000, () => now);
    const a = pool.acquire();
    pool.acquire();
    pool.release(a);
    now = 10;
    assert.equal(pool.acquire().index, 1);
    assert.throws(() => pool.acquire(), /node is full/);
  });

  test("claimed slots (adopted after a restart) are never handed out", () => {
    const pool = new SlotPool(10, 0);
    pool.claim(1);
    pool.claim(2);
    assert.equal(pool.acquire().index, 3);
  });
});

describe("slot names and addresses", () => {
  test("derive from the index and map back to it", () => {
    const slot = new Slot(258);
    assert.equal(slot.hostAddress, "10.11.1.2");
    assert.equal(slot.outerNamespace, "moat-n258");
    assert.equal(slot.guestNamespace, "moat-g258");
    assert.equal(slot.hostVeth, "moat-v258");
    assert.equal(slot.transferHostIP, "10.12.4.9");
    assert.equal(slot.transferPeerIP, "10.12.4.10");
    assert.equal(slotIndexOf("moat-v258"), 258);
    assert.equal(slotIndexOf("moat-dev-a"), undefined);
    assert.throws(() => new Slot(0));
  });
});

describe("SlotPool start", () => {
  test("never-used slots are taken from the first index given, wrapping around", () => {
    const pool = new SlotPool(5, 1000, () => 0, 4);
    assert.deepEqual(
      [pool.acquire(), pool.acquire(), pool.acquire()].map((s) => s.index),
      [4, 5, 1],
    );
    pool.release(new Slot(5));
    assert.deepEqual(
      [pool.acquire(), pool.acquire()].map((s) => s.index),
      [2, 3],
      "a freed slot rests",
    );
    assert.equal(pool.acquire().index, 5, "full: the freed slot is reused");
    assert.throws(() => pool.acquire(), /node is full/);
  });
});
