/**
 * What the records make of what a node reports (its WatchEvents stream, List and Get): the rules
 * alone, without the database or the network. orchestrator/node-watcher.ts feeds them and carries
 * out what they answer.
 *
 * The node kills sandboxes on its own (end time reached, runtime died) and pauses those created
 * with autoPause at their end time. A stop event closes the record; a pause or resume event makes
 * the record take the node's current word. A reconcile (after every (re)connect and periodically)
 * closes records the node no longer has (their events were missed) and records of creates that
 * can no longer finish, adopts the node's running or paused state (paused sandboxes survive node
 * restarts and stay paused), and kills sandboxes the node has whose record is closed (nobody can
 * reach them any more; e.g. their create was abandoned). Sandboxes the API never recorded are left
 * alone: something else started them on the node (tests, benchmarks of the bare node).
 *
 * Pauses and resumes in flight in this process record their own outcome: their records are left
 * alone.
 */
import { timestampDate } from "@bufbuild/protobuf/wkt";
import {
  type SandboxEvent,
  SandboxEventType,
  type SandboxInfo,
  SandboxState,
} from "@moat/shared/gen/orchestrator";
import type { SandboxChanges } from "../db/sandboxes.js";
import type { SandboxRow, SandboxRowState } from "../db/schema.js";
import { LIVE_STATES } from "./states.js";

/** A record still "starting" after this long belongs to a create that will never finish. */
export const STALE_CREATE_MS = 5 * 60_000;

const STOP_REASONS: Partial<Record<SandboxEventType, string>> = {
  [SandboxEventType.KILLED]: "killed",
  [SandboxEventType.EXPIRED]: "timeout",
  [SandboxEventType.FAILED]: "failed",
};

/**
 * The rows a node's stop event closes: live ones, but those an API kill is closing (it closes the
 * row with its own reason, a retention sweep's say, once the node answers; if its process died, the
 * reconcile does).
 */
export const WATCHED_STATES: readonly SandboxRowState[] = LIVE_STATES.filter((state) => state !== "killing");

/** Records that may become paused, and running, on the node's word. */
const MAY_PAUSE: readonly SandboxRowState[] = ["running", "pausing", "resuming"];
const MAY_RUN: readonly SandboxRowState[] = ["paused", "pausing", "resuming"];

/** Close the record (to killed) with `reason`, if it is still in one of `from`. */
export interface Close {
  action: "close";
  reason: string;
  at: Date;
  from: readonly SandboxRowState[];
}

export type EventVerdict =
  | Close
  /** A pause or resume: the record takes the node's current word (see transitionNeedsNode). */
  | { action: "transition"; recorded: "paused" | "running" }
  /** The node began a pause of its own: a running record becomes pausing (see pausingNeedsRecord). */
  | { action: "pausing" }
  | { action: "ignore" };

/** What a node's event means for the sandbox's record; `now` stands in for an event without time. */
export function judgeEvent(event: SandboxEvent, now: Date): EventVerdict {
  if (event.type === SandboxEventType.PAUSED) return { action: "transition", recorded: "paused" };
  if (event.type === SandboxEventType.RESUMED) return { action: "transition", recorded: "running" };
  if (event.type === SandboxEventType.PAUSING) return { action: "pausing" };
  const reason = STOP_REASONS[event.type];
  if (!reason) return { action: "ignore" };
  return {
    action: "close",
    reason: event.reason ? `${reason}: ${event.reason}` : reason,
    at: event.time ? timestampDate(event.time) : now,
    from: WATCHED_STATES,
  };
}

/**
 * Whether a pause or resume event calls for asking the node (Get) about the record's sandbox. The
 * record takes the node's current word rather than the event's: an event read late must not undo
 * a later transition, and a resume's new host address is only in the sandbox's info. Left alone:
 * records of another node, closed or being killed, already in the event's state, and those with a
 * transition in flight in this process.
 */
export function transitionNeedsNode(
  row: SandboxRow | undefined,
  nodeID: string,
  recorded: "paused" | "running",
  inTransition: boolean,
): row is SandboxRow {
  if (inTransition || !row || row.node_id !== nodeID) return false;
  return row.state !== recorded && LIVE_STATES.includes(row.state) && row.state !== "killing";
}

/**
 * Whether a PAUSING event makes the record pausing: a running record of that node with no
 * transition in flight in this process (a pause this process asked for recorded it already). The
 * PAUSED or RESUMED event that follows on the same stream, or the reconcile, settles it.
 */
export function pausingNeedsRecord(
  row: SandboxRow | undefined,
  nodeID: string,
  inTransition: boolean,
): row is SandboxRow {
  return !inTransition && row?.node_id === nodeID && row.state === "running";
}

export interface ReconcileClock {
  now: Date;
  /** When this process started watching the node. */
  since: Date;
  /** Whether this process alone uses the database (an embedded one). */
  exclusive: boolean;
}

/** What a reconcile does with a live record of the node before looking for it on the node. */
export type RecordVerdict = Close | { action: "leave" } | { action: "check" };

export function judgeRecord(row: SandboxRow, clock: ReconcileClock, inTransition: boolean): RecordVerdict {
  if (row.state === "starting") {
    // A create that outlived any RPC deadline, or one an earlier process of an embedded database
    // recorded: the API that ran it is gone (a sandbox it left is killed as an orphan).
    const stale = new Date(clock.now.getTime() - STALE_CREATE_MS);
    if (row.created_at < stale || (clock.exclusive && row.created_at < clock.since)) {
      return { action: "close", reason: "create did not finish", at: clock.now, from: ["starting"] };
    }
    return { action: "leave" };
  }
  return inTransition ? { action: "leave" } : { action: "check" };
}

/**
 * What a reconcile does with a checked record, given the node's sandbox (undefined: the node does
 * not have it). "adopt": the record takes the node's state (nodeStateChanges), for sandboxes paused
 * or resumed while the events were missed, or by an API process that died before it recorded the
 * outcome.
 */
export function judgeOnNode(
  row: SandboxRow,
  info: SandboxInfo | undefined,
  now: Date,
): Close | { action: "leave" } | { action: "adopt" } {
  if (!info) {
    // Being resumed from its published pause: the node may still be fetching it.
    if (row.state === "resuming" && row.artifact_generation) return { action: "leave" };
    return { action: "close", reason: "missing on node", at: now, from: [row.state] };
  }
  return row.state === "killing" ? { action: "leave" } : { action: "adopt" };
}

/**
 * Whether a sandbox the node has, whose record was closed only because its node stopped
 * heartbeating, survived and is taken back: the node (restarted, or back on the network) still
 * runs it, and its end time has not come. Any other closed record is final (see isOrphan).
 */
export function isSurvivor(
  row: SandboxRow | undefined,
  nodeID: string,
  info: SandboxInfo | undefined,
  now: Date,
): row is SandboxRow {
  return (
    row?.state === "killed" &&
    row.node_id === nodeID &&
    row.stop_reason === judgeLost(nodeID, now).reason &&
    row.end_at > now &&
    info?.state === SandboxState.RUNNING &&
    info.hostAddress !== ""
  );
}

/** Whether a sandbox the node has must be killed: its record is closed. */
export function isOrphan(row: SandboxRow | undefined): boolean {
  return row?.state === "killed";
}

/**
 * Whether a sandbox the node has is a stray copy to drop: its record lives on another node, settled
 * there (resumed there from its published pause while this node was gone, or created there after
 * this node's create seemed to fail). A record between states is left alone: the move may not be
 * final yet.
 */
export function isStrayCopy(row: SandboxRow | undefined, nodeID: string, inTransition: boolean): boolean {
  if (inTransition || !row || row.node_id === nodeID) return false;
  return row.state === "running" || row.state === "paused";
}

/**
 * Whether a node's stop event closes the record: only the record's own node speaks for it (a node
 * dropping a stray copy says KILLED too).
 */
export function stopEventApplies(row: SandboxRow | undefined, nodeID: string): boolean {
  return row === undefined || row.node_id === nodeID;
}

/**
 * The changes that bring the record in line with the node's RUNNING or PAUSED sandbox; undefined
 * when none (other node states are between states: the record waits for their outcome).
 */
export function nodeStateChanges(row: SandboxRow, info: SandboxInfo): SandboxChanges | undefined {
  if (info.state === SandboxState.PAUSED && MAY_PAUSE.includes(row.state)) {
    return { state: "paused", host_address: null, artifact_generation: info.artifactGeneration || null };
  }
  if (
    info.state === SandboxState.RUNNING &&
    info.hostAddress !== "" &&
    (MAY_RUN.includes(row.state) || (row.state === "running" && row.host_address !== info.hostAddress))
  ) {
    // A resume elsewhere moved it: a new host address, and the end time the node now enforces.
    return {
      state: "running",
      host_address: info.hostAddress,
      artifact_generation: null,
      envd_version: info.envdVersion || row.envd_version,
      ...(info.endTime ? { end_at: timestampDate(info.endTime) } : {}),
      ...(info.startTime && row.state !== "running" ? { started_at: timestampDate(info.startTime) } : {}),
    };
  }
  return undefined;
}

/**
 * The records a node that stopped heartbeating loses: what ran, was starting or was pausing on it.
 * Paused sandboxes keep their state (their files and memory are saved; they may resume elsewhere),
 * and a resume in flight settles back to paused when its node does not answer.
 */
export const LOST_STATES: readonly SandboxRowState[] = ["starting", "running", "pausing"];

/** How a record of an unhealthy node is closed; conditional, so that one API process does it. */
export function judgeLost(nodeID: string, now: Date): Close {
  return {
    action: "close",
    reason: `lost: node '${nodeID}' stopped sending heartbeats`,
    at: now,
    from: LOST_STATES,
  };
}
