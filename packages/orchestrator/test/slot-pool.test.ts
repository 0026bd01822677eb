import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { checkNamePrefix, Slot, slotIndexOfLink, slotIndexOfNamespace } from "../src/network/slot.js";
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
    assert.equal(slotIndexOfLink("moat-v258"), 258);
    assert.equal(slotIndexOfLink("moat-dev-a"), undefined);
    assert.equal(slotIndexOfNamespace("moat-n258"), 258);
    assert.equal(slotIndexOfNamespace("moat-v258"), undefined);
    assert.throws(() => new Slot(0));
  });

  test("a node's name prefix names its namespaces; its veths keep their names (they live in its own netns)", () => {
    const slot = new Slot(7, "moat-a-");
    assert.equal(slot.outerNamespace, "moat-a-n7");
    assert.equal(slot.guestNamespace, "moat-a-g7");
    assert.equal(slot.guestNamespacePath, "/var/run/netns/moat-a-g7");
    assert.equal(slot.hostVeth, "moat-v7");
    assert.equal(slotIndexOfNamespace("moat-a-n7", "moat-a-"), 7);
    assert.equal(slotIndexOfNamespace("moat-a-n7"), undefined);
    assert.equal(slotIndexOfNamespace("moat-n7", "moat-a-"), undefined);
  });

  test("name prefixes are short, lowercase and end in '-'", () => {
    for (const ok of ["moat-", "moat-1-", "moat-a-", "x-"]) assert.equal(checkNamePrefix(ok), ok);
    for (const bad of [
      "",
      "moat",
      "-",
      "1-",
      "Moat-",
      "moat/..-",
      "moat a-",
      `${"a".repeat(20)}-`,
      "moat-\n-",
    ]) {
      assert.throws(() => checkNamePrefix(bad, "--name-prefix"), /--name-prefix must be/, bad);
    }
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
