/**
 * Taking a unit of a counted quota: under a lock on the team's row (`lockTeam`, in a transaction),
 * count what the team holds, refuse when it is at its limit, else write what takes the unit (the
 * sandbox's record, its state change, the build's claim, the file's record) before the lock is
 * released. Concurrent requests for the last unit, in one API process or several on the same
 * database, take turns at the lock and only the first gets it.
 */
import type { Transaction } from "kysely";
import type { APIContext } from "../context.js";
import type { DB } from "../db/database.js";
import { countSandboxes } from "../db/sandboxes.js";
import type { Database, SandboxRowState, TeamRow } from "../db/schema.js";
import { lockTeam } from "../db/teams.js";
import { countRunningBuilds } from "../db/template-builds.js";
import { storedFileBytes } from "../db/template-files.js";
import { QuotaExceededError, TooLargeError, UnauthenticatedError } from "../errors.js";
import { type TeamLimits, teamLimits } from "./limits.js";

/** What holds one of the team's running sandboxes: a node runs (or is about to run) it. */
export const RUNNING_SLOT_STATES: readonly SandboxRowState[] = ["starting", "running", "pausing", "resuming"];
/** What holds one of its paused sandboxes. */
export const PAUSED_SLOT_STATES: readonly SandboxRowState[] = ["paused", "pausing"];

/** Runs `work` holding the team's lock, with its limits as the row says now. */
export async function withTeamLock<T>(
  ctx: Pick<APIContext, "db" | "config">,
  teamID: string,
  work: (tx: Transaction<Database>, team: TeamRow, limits: TeamLimits) => Promise<T>,
): Promise<T> {
  return ctx.db.transaction().execute(async (tx) => {
    const team = await lockTeam(tx, teamID);
    if (!team) throw new UnauthenticatedError(`team '${teamID}' no longer exists`);
    return work(tx, team, teamLimits(ctx.config.quotas, team));
  });
}

/** E2B's words (SDKs and apps match them), with where to get more here. */
export function sandboxLimitMessage(limit: number): string {
  return (
    `you have reached the maximum number of concurrent E2B sandboxes (${limit}). If you need more, ` +
    "kill or pause sandboxes you no longer use, or ask the operator of this moat to raise the team's maxSandboxes"
  );
}

/** `take` (which moves a sandbox into a running state) runs only while the team is under maxSandboxes. */
export async function takeRunningSlot<T>(
  ctx: Pick<APIContext, "db" | "config">,
  teamID: string,
  take: (tx: DB) => Promise<T>,
): Promise<T> {
  return withTeamLock(ctx, teamID, async (tx, _team, limits) => {
    const running = await countSandboxes(tx, { teamID, states: RUNNING_SLOT_STATES });
    if (running >= limits.maxSandboxes)
      throw new QuotaExceededError(sandboxLimitMessage(limits.maxSandboxes));
    return take(tx);
  });
}

/** `take` (which moves a sandbox towards paused) runs only while the team is under maxPausedSandboxes. */
export async function takePausedSlot<T>(
  ctx: Pick<APIContext, "db" | "config">,
  teamID: string,
  take: (tx: DB) => Promise<T>,
): Promise<T> {
  return withTeamLock(ctx, teamID, async (tx, _team, limits) => {
    const paused = await countSandboxes(tx, { teamID, states: PAUSED_SLOT_STATES });
    if (paused >= limits.maxPausedSandboxes) {
      throw new QuotaExceededError(
        `you have reached the maximum number of paused sandboxes (${limits.maxPausedSandboxes}). ` +
          "Kill paused sandboxes you no longer need, or ask the operator of this moat to raise the team's maxPausedSandboxes",
      );
    }
    return take(tx);
  });
}

/** `take` (which claims a build) runs only while the team has fewer than maxBuilds running. */
export async function takeBuildSlot<T>(
  ctx: Pick<APIContext, "db" | "config">,
  teamID: string,
  take: (tx: DB) => Promise<T>,
): Promise<T> {
  return withTeamLock(ctx, teamID, async (tx, _team, limits) => {
    const running = await countRunningBuilds(tx, teamID);
    if (running >= limits.maxBuilds) {
      throw new QuotaExceededError(
        `you have reached the maximum number of template builds in progress (${limits.maxBuilds}). ` +
          "Wait for one to finish, or ask the operator of this moat to raise the team's maxBuilds",
      );
    }
    return take(tx);
  });
}

/**
 * `take` (which records the team's file of `hash`, `size` bytes) runs only while the team's
 * uploaded files, the one it replaces aside, stay within maxStoredUploadBytes with it.
 */
export async function takeUploadSpace<T>(
  ctx: Pick<APIContext, "db" | "config">,
  teamID: string,
  hash: string,
  size: number,
  take: (tx: DB) => Promise<T>,
): Promise<T> {
  return withTeamLock(ctx, teamID, async (tx, _team, limits) => {
    checkUploadSpace(limits, await storedFileBytes(tx, teamID, hash), size);
    return take(tx);
  });
}

/** TooLargeError when `size` more bytes would take the team past maxStoredUploadBytes. */
export function checkUploadSpace(limits: TeamLimits, stored: number, size: number): void {
  if (stored + size > limits.maxStoredUploadBytes) {
    throw new TooLargeError(
      `the team's uploaded template files would take ${stored + size} bytes, more than its limit of ` +
        `${limits.maxStoredUploadBytes} (maxStoredUploadBytes); files no build used for a week are removed, ` +
        "or ask the operator of this moat to raise the limit",
    );
  }
}
