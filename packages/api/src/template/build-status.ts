/**
 * A build's status with a page of its log (GET /templates/{id}/builds/{buildID}/status). The SDK
 * polls it every 200 ms, advancing `logsOffset` by the entries it received, until the build is
 * ready or failed and a poll answers no more entries. The status is read before the log: every
 * entry written before the build ended is then in the page or a later one.
 */
import type { APIContext } from "../context.js";
import type {
  TeamRow,
  TemplateBuildLogRow,
  TemplateBuildLogsTable,
  TemplateBuildRow,
  TemplateRow,
} from "../db/schema.js";
import { listBuildLogs } from "../db/template-builds.js";
import { findOwnBuild } from "./resolve.js";

type Level = TemplateBuildLogsTable["level"];

/** Lowest first: a `level` query answers it and those after it. */
export const LOG_LEVELS: readonly Level[] = ["debug", "info", "warn", "error"];
/** The most entries one poll answers (as E2B's API). */
export const MAX_LOG_ENTRIES = 100;

export interface StatusQuery {
  /** Entries (at `level` and above) to skip. */
  logsOffset?: number;
  limit?: number;
  /** The lowest level answered; all when absent. */
  level?: Level;
}

export interface BuildStatus {
  template: TemplateRow;
  build: TemplateBuildRow;
  /** The page of the log the query asked for. */
  entries: TemplateBuildLogRow[];
  /** Why a failed build failed, with the warnings and errors of its failed step. */
  reason?: { message: string; step?: string; entries: TemplateBuildLogRow[] };
}

export async function buildStatus(
  ctx: APIContext,
  team: TeamRow,
  templateRef: string,
  buildID: string,
  query: StatusQuery,
): Promise<BuildStatus> {
  const { template, build } = await findOwnBuild(ctx.db, team, templateRef, buildID);
  const levels = LOG_LEVELS.slice(LOG_LEVELS.indexOf(query.level ?? "debug"));
  const entries = await listBuildLogs(ctx.db, {
    buildID,
    levels,
    offset: query.logsOffset ?? 0,
    limit: Math.min(query.limit ?? MAX_LOG_ENTRIES, MAX_LOG_ENTRIES),
  });
  let reason: BuildStatus["reason"];
  if (build.status === "error" && build.reason) {
    // What went wrong in the failed step, for the SDK's BuildError.
    const stepEntries =
      build.reason.step === undefined
        ? []
        : await listBuildLogs(ctx.db, {
            buildID,
            levels: ["warn", "error"],
            offset: 0,
            limit: MAX_LOG_ENTRIES,
            step: build.reason.step,
          });
    reason = {
      message: build.reason.message,
      ...(build.reason.step !== undefined ? { step: build.reason.step } : {}),
      entries: stepEntries,
    };
  }
  return { template, build, entries, ...(reason ? { reason } : {}) };
}
