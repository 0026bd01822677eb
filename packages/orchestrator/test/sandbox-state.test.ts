import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { CleanupStack } from "@moat/shared";
import type { SandboxRecord } from "../src/sandbox/record.js";
import { Sandbox } from "../src/sandbox/sandbox.js";
import { canMove, IllegalStateChangeError, type SandboxState } from "../src/sandbox/state.js";

const ALL: SandboxState[] = [
  "pooled",
  "starting",
  "running",
  "pausing",
  "paused",
  "resuming",
  "snapshotting",
  "stopping",
];

describe("sandbox states", () => {
  test("the table: the lifecycle's moves and no others", () => {
    const allowed = ALL.flatMap((from) => ALL.filter((to) => canMove(from, to)).map((to) => `${from}→${to}`));
    assert.deepEqual(allowed, [
      "pooled→starting",
      "pooled→stopping",
      "starting→running",
      "starting→stopping",
      "running→pausing",
      "running→snapshotting",
      "running→stopping",
      "pausing→running",
      "pausing→paused",
      "pausing→stopping",
      "paused→resuming",
      "paused→stopping",
      "resuming→running",
      "resuming→paused",
      "snapshotting→running",
    ]);
  });

  test("a sandbox moves only as the table allows; its kind is data in its record", () => {
    const record = { sandboxID: "s1", state: "starting" } as SandboxRecord;
    const sandbox = new Sandbox(record, "/nonexistent", new CleanupStack());
    assert.equal(sandbox.state, "starting");
    assert.equal(sandbox.kind, "user", "records without a kind are users' sandboxes");
    sandbox.moveTo("running");
    assert.throws(() => sandbox.moveTo("resuming"), IllegalStateChangeError);
    assert.equal(sandbox.state, "running", "a refused move changes nothing");
    const pooled = new Sandbox(
      { sandboxID: "p", state: "pooled", kind: "pool" } as SandboxRecord,
      "/x",
      new CleanupStack(),
      "pooled",
    );
    assert.equal(pooled.kind, "pool");
    assert.throws(() => pooled.moveTo("running"), /no move from pooled to running/);
  });
});
