/**
 * The reconcile rules: what the records make of a node's events, list and Get. Pure decisions on
 * plain rows and messages; the node watcher that feeds them is tested through the fake node
 * (restart.test.ts, pause.test.ts).
 */
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { create } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import {
  SandboxEventSchema,
  SandboxEventType,
  SandboxInfoSchema,
  SandboxState,
} from "@moat/shared/gen/orchestrator";
import type { SandboxRow, SandboxRowState } from "../src/db/schema.js";
import {
  isOrphan,
  isSurvivor,
  judgeEvent,
  judgeLost,
  judgeOnNode,
  judgeRecord,
  nodeStateChanges,
  pausingNeedsRecord,
  STALE_CREATE_MS,
  transitionNeedsNode,
  WATCHED_STATES,
} from "../src/sandbox/reconcile.js";

const NOW = new Date("2030-01-01T12:00:00.000Z");
const SINCE = new Date(NOW.getTime() - 60_000);
const clock = { now: NOW, since: SINCE, exclusive: false };

function row(state: SandboxRowState, overrides: Partial<SandboxRow> = {}): SandboxRow {
  return {
    sandbox_id: "sbx-1",
    team_id: "team-1",
    template_id: "base",
    alias: null,
    node_id: "node-1",
    state,
    host_address: state === "running" ? "10.0.0.2:49983" : null,
    envd_version: "0.1.0",
    envd_access_token: null,
    traffic_access_token: null,
    metadata: {},
    cpu_count: 2,
    memory_mb: 512,
    disk_size_mb: 1024,
    allow_internet_access: null,
    network: null,
    auto_pause: false,
    auto_resume: false,
    timeout_seconds: 300,
    started_at: new Date(NOW.getTime() - 10_000),
    paused_at: null,
    end_at: new Date(NOW.getTime() + 300_000),
    stopped_at: null,
    stop_reason: null,
    created_at: new Date(NOW.getTime() - 10_000),
    ...overrides,
  };
}

const event = (type: SandboxEventType, extra: { reason?: string; time?: Date } = {}) =>
  create(SandboxEventSchema, {
    sandboxId: "sbx-1",
    type,
    reason: extra.reason ?? "",
    ...(extra.time ? { time: timestampFromDate(extra.time) } : {}),
  });

const info = (state: SandboxState, hostAddress = "", more: { end?: Date; start?: Date } = {}) =>
  create(SandboxInfoSchema, {
    state,
    hostAddress,
    envdVersion: "0.2.0",
    ...(more.end ? { endTime: timestampFromDate(more.end) } : {}),
    ...(more.start ? { startTime: timestampFromDate(more.start) } : {}),
  });

describe("reconcile rules", () => {
  test("stop events close live rows but those an API kill is closing, with the event's time and reason", () => {
    const at = new Date(NOW.getTime() - 5_000);
    assert.deepEqual(judgeEvent(event(SandboxEventType.EXPIRED, { time: at }), NOW), {
      action: "close",
      reason: "timeout",
      at,
      from: WATCHED_STATES,
    });
    const failed = judgeEvent(event(SandboxEventType.FAILED, { reason: "runtime exited" }), NOW);
    assert.equal(failed.action, "close");
    assert.equal(failed.action === "close" && failed.reason, "failed: runtime exited");
    assert.equal(failed.action === "close" && failed.at, NOW);
    assert.equal(judgeEvent(event(SandboxEventType.KILLED), NOW).action, "close");
    assert.ok(!WATCHED_STATES.includes("killing") && !WATCHED_STATES.includes("killed"));
    assert.ok(WATCHED_STATES.includes("starting") && WATCHED_STATES.includes("paused"));
  });

  test("pause and resume events are transitions; others are ignored", () => {
    assert.deepEqual(judgeEvent(event(SandboxEventType.PAUSED), NOW), {
      action: "transition",
      recorded: "paused",
    });
    assert.deepEqual(judgeEvent(event(SandboxEventType.RESUMED), NOW), {
      action: "transition",
      recorded: "running",
    });
    assert.deepEqual(judgeEvent(event(SandboxEventType.CREATED), NOW), { action: "ignore" });
  });

  test("a pause the node began makes only this node's running rows pausing, none in transition here", () => {
    assert.deepEqual(judgeEvent(event(SandboxEventType.PAUSING), NOW), { action: "pausing" });
    assert.ok(pausingNeedsRecord(row("running"), "node-1", false));
    assert.ok(!pausingNeedsRecord(row("running"), "node-1", true), "this process's own pause");
    assert.ok(!pausingNeedsRecord(row("running"), "node-2", false), "another node's");
    for (const state of ["starting", "pausing", "paused", "resuming", "killing", "killed"] as const) {
      assert.ok(!pausingNeedsRecord(row(state), "node-1", false), state);
    }
    assert.ok(!pausingNeedsRecord(undefined, "node-1", false), "never recorded");
  });

  test("a transition event asks the node only for this node's live rows not yet in that state", () => {
    assert.ok(transitionNeedsNode(row("running"), "node-1", "paused", false));
    assert.ok(transitionNeedsNode(row("pausing"), "node-1", "paused", false));
    assert.ok(transitionNeedsNode(row("paused"), "node-1", "running", false));
    assert.ok(!transitionNeedsNode(row("paused"), "node-1", "paused", false), "already paused");
    assert.ok(!transitionNeedsNode(row("running"), "node-1", "paused", true), "a transition in flight here");
    assert.ok(!transitionNeedsNode(row("running"), "node-2", "paused", false), "another node's");
    assert.ok(!transitionNeedsNode(undefined, "node-1", "paused", false), "never recorded");
    assert.ok(!transitionNeedsNode(row("killing"), "node-1", "paused", false));
    assert.ok(!transitionNeedsNode(row("killed"), "node-1", "running", false));
  });

  test("starting rows: closed once stale, or from an earlier process of an exclusive database", () => {
    assert.deepEqual(judgeRecord(row("starting"), clock, false), { action: "leave" });
    const stale = row("starting", { created_at: new Date(NOW.getTime() - STALE_CREATE_MS - 1) });
    assert.deepEqual(judgeRecord(stale, clock, false), {
      action: "close",
      reason: "create did not finish",
      at: NOW,
      from: ["starting"],
    });
    const earlier = row("starting", { created_at: new Date(SINCE.getTime() - 1) });
    assert.deepEqual(judgeRecord(earlier, clock, false), { action: "leave" });
    assert.equal(judgeRecord(earlier, { ...clock, exclusive: true }, false).action, "close");
    assert.equal(judgeRecord(row("starting"), { ...clock, exclusive: true }, false).action, "leave");
  });

  test("other rows are checked on the node unless a transition is in flight here", () => {
    for (const state of ["running", "pausing", "paused", "resuming", "killing"] as const) {
      assert.deepEqual(judgeRecord(row(state), clock, false), { action: "check" }, state);
      assert.deepEqual(judgeRecord(row(state), clock, true), { action: "leave" }, state);
    }
  });

  test("a row the node does not have is lost; one it has adopts its state, unless being killed", () => {
    assert.deepEqual(judgeOnNode(row("paused"), undefined, NOW), {
      action: "close",
      reason: "missing on node",
      at: NOW,
      from: ["paused"],
    });
    assert.equal(judgeOnNode(row("killing"), undefined, NOW).action, "close");
    assert.deepEqual(judgeOnNode(row("running"), info(SandboxState.RUNNING, "h:1"), NOW), {
      action: "adopt",
    });
    assert.deepEqual(judgeOnNode(row("killing"), info(SandboxState.RUNNING, "h:1"), NOW), {
      action: "leave",
    });
  });

  test("sandboxes on the node whose record is closed are orphans; unrecorded ones are left alone", () => {
    assert.ok(isOrphan(row("killed")));
    assert.ok(!isOrphan(undefined));
    for (const state of ["starting", "running", "paused", "killing"] as const)
      assert.ok(!isOrphan(row(state)));
  });

  test("a sandbox recorded lost with its silent node, still running there before its end, survives; nothing else does", () => {
    const lost = judgeLost("node-1", NOW).reason;
    const running = info(SandboxState.RUNNING, "10.0.0.3");
    const closed = (over: Partial<SandboxRow>) =>
      row("killed", { node_id: "node-1", stop_reason: lost, ...over });
    assert.ok(isSurvivor(closed({}), "node-1", running, NOW));
    assert.ok(!isSurvivor(closed({}), "node-2", running, NOW), "another node's word");
    assert.ok(!isSurvivor(closed({ stop_reason: "killed" }), "node-1", running, NOW), "killed by a user");
    assert.ok(
      !isSurvivor(closed({ end_at: new Date(NOW.getTime() - 1) }), "node-1", running, NOW),
      "past its end",
    );
    assert.ok(!isSurvivor(closed({}), "node-1", info(SandboxState.PAUSED), NOW), "not running");
    assert.ok(!isSurvivor(closed({}), "node-1", undefined, NOW));
    assert.ok(!isSurvivor(row("running", { node_id: "node-1" }), "node-1", running, NOW), "not closed");
  });

  test("adopting: PAUSED pauses running and in-between rows", () => {
    for (const state of ["running", "pausing", "resuming"] as const) {
      assert.deepEqual(nodeStateChanges(row(state), info(SandboxState.PAUSED)), {
        state: "paused",
        host_address: null,
        // Not published (the node says generation 0): only its node can resume it.
        artifact_generation: null,
      });
    }
    assert.equal(nodeStateChanges(row("paused"), info(SandboxState.PAUSED)), undefined);
  });

  test("adopting: RUNNING with an address runs paused and in-between rows, and moves a running one", () => {
    const end = new Date(NOW.getTime() + 600_000);
    const start = new Date(NOW.getTime() - 1_000);
    assert.deepEqual(nodeStateChanges(row("paused"), info(SandboxState.RUNNING, "h:2", { end, start })), {
      state: "running",
      host_address: "h:2",
      artifact_generation: null,
      envd_version: "0.2.0",
      end_at: end,
      started_at: start,
    });
    // Running already: a new address (a resume elsewhere) is taken, its start time is not.
    assert.deepEqual(nodeStateChanges(row("running"), info(SandboxState.RUNNING, "h:2", { start })), {
      state: "running",
      host_address: "h:2",
      artifact_generation: null,
      envd_version: "0.2.0",
    });
    assert.equal(nodeStateChanges(row("running"), info(SandboxState.RUNNING, "10.0.0.2:49983")), undefined);
    assert.equal(
      nodeStateChanges(row("paused"), info(SandboxState.RUNNING, "")),
      undefined,
      "no address yet",
    );
  });

  test("adopting: between states on the node, and rows being killed, change nothing", () => {
    for (const state of [SandboxState.PAUSING, SandboxState.RESUMING, SandboxState.STARTING]) {
      assert.equal(nodeStateChanges(row("running"), info(state, "h:2")), undefined);
      assert.equal(nodeStateChanges(row("paused"), info(state, "h:2")), undefined);
    }
    assert.equal(nodeStateChanges(row("killing"), info(SandboxState.PAUSED)), undefined);
    assert.equal(nodeStateChanges(row("killing"), info(SandboxState.RUNNING, "h:2")), undefined);
  });
});
