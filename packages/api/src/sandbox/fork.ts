/**
 * Forking a running sandbox (POST /sandboxes/{id}/fork): its node snapshots it once in place (it
 * runs on, keeping its id and end time) and starts `count` sandboxes from that snapshot, each
 * with the source's settings and memory, processes and files, and its own id, tokens and end
 * time. Every fork is a sandbox of the team: all of them are recorded `starting` at once under
 * the team's lock (they fit in its maxSandboxes together, or none is attempted), then each
 * becomes running, or killed with the error the node gave for it.
 */
import type { ForkResult } from "@moat/shared/gen/orchestrator";
import type { APIContext } from "../context.js";
import { countSandboxes, insertSandbox, updateSandbox } from "../db/sandboxes.js";
import type { NewSandboxRow, SandboxRow, TeamRow } from "../db/schema.js";
import { InvalidRequestError, QuotaExceededError } from "../errors.js";
import { type SandboxView, sandboxView } from "../http/views.js";
import type { TeamLimits } from "../quotas/limits.js";
import { RUNNING_SLOT_STATES, withTeamLock } from "../quotas/reserve.js";
import { runningSource, sourceError } from "../snapshot/create.js";
import { newEnvdAccessToken, newSandboxID, newTrafficAccessToken } from "./ids.js";
import { logSandbox, markKilled } from "./lifecycle.js";
import { nodeOf } from "./nodes.js";

/** Forks one request may ask for (E2B's cap): each restores on the source's node. */
export const MAX_FORK_COUNT = 100;

export interface ForkRequest {
  count: number;
  timeoutSeconds: number;
}

/** One fork's outcome as the SDK reads it: exactly one of the two. */
export type ForkResultView = { sandbox: SandboxView } | { error: { code: number; message: string } };

export async function forkSandbox(
  ctx: APIContext,
  caller: { team: TeamRow; limits: TeamLimits },
  sandboxID: string,
  request: ForkRequest,
): Promise<ForkResultView[]> {
  const { team, limits } = caller;
  const { count } = request;
  if (!Number.isInteger(count) || count < 1 || count > MAX_FORK_COUNT) {
    throw new InvalidRequestError(`count must be an integer from 1 to ${MAX_FORK_COUNT}, got ${count}`);
  }
  if (count >= limits.maxSandboxes) {
    throw new InvalidRequestError(
      `count must be lower than the team's maximum of concurrent sandboxes (${limits.maxSandboxes}): ` +
        "the source sandbox takes one",
    );
  }
  const source = await runningSource(ctx, team.team_id, sandboxID, "fork");
  const node = nodeOf(ctx, source);
  const now = new Date();
  const endAt = new Date(now.getTime() + request.timeoutSeconds * 1000);
  const forks = Array.from({ length: count }, () =>
    forkRow(source, {
      sandbox_id: newSandboxID(),
      envd_access_token: newEnvdAccessToken(),
      traffic_access_token: source.traffic_access_token ? newTrafficAccessToken() : null,
      started_at: now,
      end_at: endAt,
      timeout_seconds: request.timeoutSeconds,
    }),
  );
  await withTeamLock(ctx, team.team_id, async (tx, _team, current) => {
    const running = await countSandboxes(tx, { teamID: team.team_id, states: RUNNING_SLOT_STATES });
    if (running + count > current.maxSandboxes) {
      throw new QuotaExceededError(
        `forking ${count} sandbox${count === 1 ? "" : "es"} would take the team past its maximum number of ` +
          `concurrent E2B sandboxes (${current.maxSandboxes}; ${running} running). Kill or pause sandboxes ` +
          "you no longer use, fork fewer, or ask the operator of this moat to raise the team's maxSandboxes",
      );
    }
    for (const row of forks) await insertSandbox(tx, row);
  });

  let results: ForkResult[];
  try {
    results = await node.fork(
      source.sandbox_id,
      forks.map((f) => ({
        sandboxID: f.sandbox_id,
        envdAccessToken: f.envd_access_token ?? "",
        endTime: endAt,
      })),
    );
  } catch (err) {
    const reason = err instanceof Error ? err.message : String(err);
    await Promise.all(forks.map((f) => markKilled(ctx, f.sandbox_id, `fork failed: ${reason}`)));
    throw await sourceError(ctx, source, err);
  }
  ctx.logger.info({ sandboxID, teamID: team.team_id, count }, "sandbox forked");
  return Promise.all(results.map((result, i) => settleFork(ctx, source, forks[i]!.sandbox_id, result)));
}

/**
 * A fork's record: the source's (so whatever the source was created with, the fork has too),
 * with its own id, tokens and times. Its JSON columns are written as JSON again.
 */
function forkRow(
  source: SandboxRow,
  own: Pick<
    NewSandboxRow,
    "sandbox_id" | "envd_access_token" | "traffic_access_token" | "started_at" | "end_at" | "timeout_seconds"
  >,
): NewSandboxRow {
  const { created_at: _created, ...settings } = source;
  const row: Record<string, unknown> = {};
  for (const [column, value] of Object.entries(settings)) {
    row[column] =
      value !== null && typeof value === "object" && !(value instanceof Date) ? JSON.stringify(value) : value;
  }
  return {
    ...(row as unknown as NewSandboxRow),
    ...own,
    state: "starting",
    host_address: null,
    paused_at: null,
    stopped_at: null,
    stop_reason: null,
  };
}

async function settleFork(
  ctx: APIContext,
  source: SandboxRow,
  forkID: string,
  result: ForkResult,
): Promise<ForkResultView> {
  const info = result.sandbox;
  if (!info) {
    await markKilled(ctx, forkID, `fork failed: ${result.errorMessage}`);
    // No room on the node: the SDK's RateLimitError, as for a create.
    const code = result.errorCode === "resource_exhausted" ? 429 : 500;
    return {
      error: { code, message: `fork ${forkID} of '${source.sandbox_id}' failed: ${result.errorMessage}` },
    };
  }
  const row = await updateSandbox(ctx.db, forkID, ["starting"], {
    state: "running",
    host_address: info.hostAddress,
    envd_version: info.envdVersion,
  });
  if (!row) {
    // A node event closed it meanwhile (it failed right away): nothing of it may stay behind.
    await nodeOf(ctx, source)
      .delete(forkID)
      .catch(() => undefined);
    return { error: { code: 500, message: `fork ${forkID} stopped while it was being started` } };
  }
  ctx.catalog.update(forkID, row);
  await logSandbox(ctx, row, "info", "sandbox created", { forkOf: source.sandbox_id });
  return { sandbox: sandboxView(row, ctx.config.domain) };
}
