/**
 * Recording what happens to a sandbox: its lifecycle log (served as the sandbox's logs), the
 * pauses and resumes, and the transition to killed, whoever learns of it first (a request, a node
 * event, a reconcile).
 */
import type { APIContext } from "../context.js";
import { insertSandboxLog } from "../db/sandbox-logs.js";
import { updateSandbox } from "../db/sandboxes.js";
import type { SandboxLogsTable, SandboxRow, SandboxRowState } from "../db/schema.js";
import { LIVE_STATES, publicState } from "./states.js";

export async function logSandbox(
  ctx: APIContext,
  row: Pick<SandboxRow, "sandbox_id" | "team_id">,
  level: SandboxLogsTable["level"],
  message: string,
  fields: Record<string, string> = {},
): Promise<void> {
  try {
    await insertSandboxLog(ctx.db, {
      sandboxID: row.sandbox_id,
      teamID: row.team_id,
      level,
      message,
      fields,
    });
  } catch (err) {
    // The log is a convenience; losing a line must not fail the operation it describes.
    ctx.logger.warn({ err, sandboxID: row.sandbox_id }, "could not write sandbox log");
  }
}

/**
 * Marks a sandbox killed unless it already is; answers the row when this call made the change
 * (so only one of several witnesses logs it).
 */
export async function markKilled(
  ctx: APIContext,
  sandboxID: string,
  reason: string,
  at = new Date(),
  from: readonly SandboxRowState[] = LIVE_STATES,
): Promise<SandboxRow | undefined> {
  const row = await updateSandbox(ctx.db, sandboxID, from, {
    state: "killed",
    stopped_at: at,
    stop_reason: reason,
  });
  ctx.catalog.forget(sandboxID);
  if (row) {
    // The node logs the stop; the team's view is the sandbox's log below.
    ctx.logger.debug({ sandboxID, reason }, "sandbox stopped");
    await logSandbox(ctx, row, "info", "sandbox stopped", { reason });
  }
  return row;
}

/**
 * Publishes a change of a sandbox's record to the routing catalog and, when what the public API
 * shows changed (running ⇄ paused), logs it once: only the writer of the change calls this.
 */
export async function recordStateChange(
  ctx: APIContext,
  before: SandboxRowState,
  after: SandboxRow,
  fields: Record<string, string> = {},
): Promise<void> {
  ctx.catalog.update(after.sandbox_id, after);
  const shown = publicState(after.state);
  if (publicState(before) === shown) return;
  const message = shown === "paused" ? "sandbox paused" : "sandbox resumed";
  ctx.logger.info({ sandboxID: after.sandbox_id, ...fields }, message);
  await logSandbox(ctx, after, "info", message, fields);
}
