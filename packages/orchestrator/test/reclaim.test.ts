import assert from "node:assert/strict";
import { describe, test } from "node:test";
import {
  type ReclaimFacts,
  reclaimDecision,
  unownedLinks,
  unownedNamespaces,
} from "../src/sandbox/reclaim.js";
import type { SandboxRecord } from "../src/sandbox/record.js";

const record = (state: SandboxRecord["state"], slotIndex = 7) => ({ state, slotIndex }) as SandboxRecord;
const alive: ReclaimFacts = { containerRunning: true, networkPresent: true, imageCommitted: false };

describe("reclaim decisions after a restart", () => {
  test("a running sandbox whose container and network survived is adopted", () => {
    assert.deepEqual(reclaimDecision(record("running"), alive), { action: "adopt", pauseInterrupted: false });
  });

  test("a running sandbox that lost its container, its network or its slot is released", () => {
    for (const facts of [
      { ...alive, containerRunning: false },
      { ...alive, networkPresent: false },
    ]) {
      assert.deepEqual(reclaimDecision(record("running"), facts), { action: "release" });
    }
    assert.deepEqual(reclaimDecision(record("running", 0), alive), { action: "release" });
  });

  test("a kill a crash cut is finished, whatever ran or was paused, even with its container alive", () => {
    for (const facts of [alive, { ...alive, containerRunning: false }, { ...alive, imageCommitted: true }]) {
      assert.deepEqual(reclaimDecision(record("stopping"), facts), { action: "release" });
    }
  });

  test("a pause cut before its checkpoint ended: the sandbox runs on, marked", () => {
    assert.deepEqual(reclaimDecision(record("pausing"), alive), { action: "adopt", pauseInterrupted: true });
  });

  test("a pause whose image was committed, or whose runtime is gone, is settled as paused", () => {
    assert.deepEqual(reclaimDecision(record("pausing"), { ...alive, imageCommitted: true }), {
      action: "keep-paused",
      settle: true,
    });
    assert.deepEqual(reclaimDecision(record("pausing"), { ...alive, containerRunning: false }), {
      action: "keep-paused",
      settle: true,
    });
  });

  test("a snapshot a crash cut: the sandbox (resumed first) runs on; without its container it is released", () => {
    assert.deepEqual(reclaimDecision(record("snapshotting"), alive), {
      action: "adopt",
      pauseInterrupted: false,
    });
    assert.deepEqual(reclaimDecision(record("snapshotting"), { ...alive, containerRunning: false }), {
      action: "release",
    });
  });

  test("paused sandboxes are kept; creates, pool entries and unreadable records are released", () => {
    assert.deepEqual(reclaimDecision(record("paused"), { ...alive, containerRunning: false }), {
      action: "keep-paused",
      settle: false,
    });
    for (const state of ["starting", "pooled"] as const) {
      assert.deepEqual(reclaimDecision(record(state), alive), { action: "release" }, state);
    }
    assert.deepEqual(reclaimDecision(undefined, alive), { action: "release" });
  });
});

describe("reclaim reaps only its own prefix's names", () => {
  const host = [
    "moat-n3",
    "moat-g3",
    "moat-n4",
    "moat-a-n3",
    "moat-a-g3",
    "moat-a-n9",
    "moat-probe-12-1",
    "moattest-x",
  ];

  test("a node `moat-` never reaps `moat-a-n3` (another node on the same kernel)", () => {
    assert.deepEqual(unownedNamespaces(host, "moat-", new Set([4])), ["moat-n3", "moat-g3"]);
  });

  test("a node `moat-a-` reaps its own unkept namespaces, nothing of `moat-`", () => {
    assert.deepEqual(unownedNamespaces(host, "moat-a-", new Set([3])), ["moat-a-n9"]);
  });

  test("links (in the node's own netns) are known by their fixed veth name", () => {
    assert.deepEqual(
      unownedLinks(["lo", "eth0", "moat-v3", "moat-v4", "moat-vx", "moatfleet-1"], new Set([4])),
      ["moat-v3"],
    );
  });
});
