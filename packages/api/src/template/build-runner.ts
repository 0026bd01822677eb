/**
 * Running template builds: each started build streams from its node's TemplateService.Build in the
 * background of this API process. Every log entry is appended to the build's log as it arrives
 * (the status route serves them by offset), then the one result moves the build to ready or error.
 * A node that is busy or unreachable before the build began is swapped for another (unless the
 * build must run on it: its base build lives there).
 *
 * The stream is what keeps the node building: when this process stops, the build stops with it.
 * So builds carry a heartbeat this process refreshes; builds still marked waiting/building after
 * a start whose heartbeat is stale belong to a process that is gone, and any API process marks
 * them error ("interrupted") when it starts and every SWEEP_INTERVAL_MS after. A process that
 * closes marks its own builds so at once. Each later sweep also retires the builds newer ones
 * superseded (retire.ts).
 */
import type { MessageInitShape } from "@bufbuild/protobuf";
import { timestampDate } from "@bufbuild/protobuf/wkt";
import type { Logger } from "@moat/shared";
import type { BuildLogEntry, BuildResult, BuildTemplateRequestSchema } from "@moat/shared/gen/orchestrator";
import type { DB } from "../db/database.js";
import type { BuildReason, TemplateBuildLogsTable } from "../db/schema.js";
import {
  type FinishedBuild,
  finishBuild,
  insertBuildLog,
  markStaleBuildsInterrupted,
  setBuildNode,
  touchBuilds,
} from "../db/template-builds.js";
import { applyReadyBuild } from "../db/templates.js";
import { NodeBusyError, type NodeClient, NodeUnavailableError } from "../orchestrator/node-client.js";
import {
  buildNodes,
  MAX_PLACEMENT_ATTEMPTS,
  type PlacementStrategy,
  placeSandbox,
} from "../placement/placement.js";
import { RETIRE_AFTER_MS, retireSupersededBuilds } from "./retire.js";

const HEARTBEAT_INTERVAL_MS = 10_000;
const SWEEP_INTERVAL_MS = 30_000;
/** A heartbeat this old means the process running the build is gone. */
const STALE_AFTER_MS = 60_000;

export interface BuildJob {
  templateID: string;
  buildID: string;
  cpuCount: number;
  memoryMB: number;
  request: MessageInitShape<typeof BuildTemplateRequestSchema>;
  /** The node the build was placed on (recorded with the build when it was claimed). */
  node: NodeClient;
  /** The build must run on `node` (it builds on a build that lives there). */
  pinned: boolean;
}

export interface BuildRunnerDeps {
  db: DB;
  /** This process is the database's only user: builds left under way at its start are dead. */
  ownsDatabase?: boolean;
  nodes: ReadonlyMap<string, NodeClient>;
  placement: PlacementStrategy;
  logger: Logger;
}

/** Why a build this process ran was stopped (the AbortSignal's reason). */
export type CancelReason = "api stopped" | "template deleted" | "cancelled by the operator";

export const CANCEL_MESSAGES: Record<CancelReason, string> = {
  "api stopped": "the build was interrupted: the API process running it stopped",
  "template deleted": "the build was interrupted: its template was deleted",
  "cancelled by the operator": "the build was cancelled by the operator",
};

interface Running {
  templateID: string;
  abort: AbortController;
  done: Promise<void>;
}

export class TemplateBuilds {
  private readonly running = new Map<string, Running>();
  private readonly timers: NodeJS.Timeout[] = [];
  private closed = false;
  private sweeping = false;

  constructor(private readonly deps: BuildRunnerDeps) {}

  /** Sweeps builds left by stopped processes now, then keeps sweeping and heartbeating. */
  async start(): Promise<void> {
    await this.sweep(this.deps.ownsDatabase ? new Date() : undefined);
    const heartbeat = setInterval(() => void this.heartbeat(), HEARTBEAT_INTERVAL_MS);
    const sweep = setInterval(() => void this.sweepAndRetire(), SWEEP_INTERVAL_MS);
    for (const timer of [heartbeat, sweep]) {
      timer.unref();
      this.timers.push(timer);
    }
  }

  /** Starts running a claimed build in the background. */
  run(job: BuildJob): void {
    const abort = new AbortController();
    if (this.closed) abort.abort("api stopped" satisfies CancelReason);
    const done = runBuild(this.deps, job, abort.signal)
      .catch((err: unknown) => {
        this.deps.logger.error({ err, buildID: job.buildID }, "template build runner failed");
      })
      .finally(() => this.running.delete(job.buildID));
    this.running.set(job.buildID, { templateID: job.templateID, abort, done });
  }

  /** Resolves once the build, if this process runs it, has finished and recorded its outcome. */
  async settled(buildID: string): Promise<void> {
    await this.running.get(buildID)?.done;
  }

  /** Stops the template's builds running here (their nodes cancel them) and waits for them. */
  async cancelTemplate(templateID: string): Promise<void> {
    const builds = [...this.running.values()].filter((r) => r.templateID === templateID);
    for (const build of builds) build.abort.abort("template deleted" satisfies CancelReason);
    await Promise.all(builds.map((b) => b.done));
  }

  /**
   * Stops the builds of `buildIDs` that run here (their nodes cancel them) and waits until each has
   * recorded its outcome; answers the ids it stopped.
   */
  async cancelBuilds(buildIDs: ReadonlySet<string>, reason: CancelReason): Promise<string[]> {
    const builds = [...this.running.entries()].filter(([id]) => buildIDs.has(id));
    for (const [, build] of builds) build.abort.abort(reason);
    await Promise.all(builds.map(([, b]) => b.done));
    return builds.map(([id]) => id);
  }

  /** Stops every build running here, recording each as interrupted. */
  async close(): Promise<void> {
    this.closed = true;
    for (const timer of this.timers) clearInterval(timer);
    for (const build of this.running.values()) build.abort.abort("api stopped" satisfies CancelReason);
    await Promise.all([...this.running.values()].map((b) => b.done));
  }

  private async heartbeat(): Promise<void> {
    try {
      await touchBuilds(this.deps.db, [...this.running.keys()]);
    } catch (err) {
      this.deps.logger.warn({ err }, "could not refresh the template builds' heartbeat");
    }
  }

  /** Marks builds whose heartbeat is older than `staleBefore` (default: STALE_AFTER_MS ago) interrupted. */
  private async sweep(staleBefore = new Date(Date.now() - STALE_AFTER_MS)): Promise<void> {
    try {
      const interrupted = await markStaleBuildsInterrupted(this.deps.db, staleBefore);
      if (interrupted.length > 0) {
        this.deps.logger.warn(
          { buildIDs: interrupted },
          "template builds of a stopped API process interrupted",
        );
      }
    } catch (err) {
      this.deps.logger.warn({ err }, "could not sweep interrupted template builds");
    }
  }

  /** One at a time: a retire waits for nodes, which may take longer than the interval. */
  private async sweepAndRetire(): Promise<void> {
    if (this.sweeping) return;
    this.sweeping = true;
    try {
      await this.sweep();
      await this.retire();
    } finally {
      this.sweeping = false;
    }
  }

  /** Not at start: it calls nodes, which may not answer yet. */
  private async retire(): Promise<void> {
    try {
      await retireSupersededBuilds(this.deps, new Date(Date.now() - RETIRE_AFTER_MS));
    } catch (err) {
      this.deps.logger.warn({ err }, "could not retire superseded template builds");
    }
  }
}

async function runBuild(deps: BuildRunnerDeps, job: BuildJob, signal: AbortSignal): Promise<void> {
  const log = deps.logger.child({ templateID: job.templateID, buildID: job.buildID });
  let node = job.node;
  const tried = new Set([node.id]);
  const entries = { next: 0 };
  log.info({ nodeID: node.id }, "template build started");
  for (let attempt = 1; ; attempt++) {
    const { began, result, error } = await streamBuild(deps.db, node, job, signal, entries);
    if (result || error === undefined) {
      // A stream that broke after its result still ended the build, as the result says.
      if (error !== undefined)
        log.warn({ err: error, nodeID: node.id }, "template build stream broke after its result");
      await finish(deps, job, outcome(node, result));
      return;
    }
    if (signal.aborted) {
      const reason = signal.reason as CancelReason;
      log.info({ reason }, "template build cancelled");
      await finish(deps, job, {
        status: "error",
        reason: { message: CANCEL_MESSAGES[reason] ?? "the build was interrupted" },
      });
      return;
    }
    const retryable = error instanceof NodeBusyError || error instanceof NodeUnavailableError;
    const next =
      !began && !job.pinned && retryable && attempt < MAX_PLACEMENT_ATTEMPTS
        ? placeSandbox(deps.placement, buildNodes([...deps.nodes.values()]), tried)
        : undefined;
    if (next) {
      log.warn({ err: error, nodeID: node.id }, "node could not take the template build; trying another");
      tried.add(next.id);
      node = next;
      await setBuildNode(deps.db, job.buildID, node.id);
      continue;
    }
    log.warn({ err: error, nodeID: node.id }, "template build failed");
    await finish(deps, job, {
      status: "error",
      reason: { message: `the build failed on node '${node.id}': ${(error as Error).message}` },
    });
    return;
  }
}

/**
 * One Build call: each log entry appended to the build's log as it arrives (numbered on from
 * `entries.next`); answers the result, or the error that ended the stream, and whether anything
 * arrived before it.
 */
async function streamBuild(
  db: DB,
  node: NodeClient,
  job: BuildJob,
  signal: AbortSignal,
  entries: { next: number },
): Promise<{ began: boolean; result?: BuildResult; error?: unknown }> {
  let began = false;
  let result: BuildResult | undefined;
  try {
    for await (const event of node.build(job.request, signal)) {
      began = true;
      if (event.event.case === "log") {
        await insertBuildLog(db, logRow(job.buildID, entries.next++, event.event.value));
      } else if (event.event.case === "result") {
        result ??= event.event.value;
      }
    }
    return { began, result };
  } catch (error) {
    return { began, result, error };
  }
}

/** What the node's result (or its absence) makes of the build. */
function outcome(node: NodeClient, result: BuildResult | undefined): FinishedBuild {
  if (!result) {
    return { status: "error", reason: { message: `node '${node.id}' ended the build without a result` } };
  }
  if (!result.ok) {
    const step = stepName(result.step);
    const reason: BuildReason = { message: result.message || "the build failed" };
    if (step !== undefined) reason.step = step;
    return { status: "error", reason };
  }
  return {
    status: "ready",
    envdVersion: result.envdVersion,
    defaultUser: result.defaultUser,
    defaultWorkdir: result.defaultWorkdir,
  };
}

async function finish(deps: BuildRunnerDeps, job: BuildJob, outcome: FinishedBuild): Promise<void> {
  const row = await finishBuild(deps.db, job.buildID, outcome);
  if (row?.status === "ready") {
    await applyReadyBuild(deps.db, job.templateID, {
      cpuCount: row.cpu_count,
      memoryMB: row.memory_mb,
      diskSizeMB: row.disk_size_mb,
    });
  }
  deps.logger.info(
    { templateID: job.templateID, buildID: job.buildID, status: outcome.status, recorded: row !== undefined },
    "template build finished",
  );
}

const LEVELS = new Set<string>(["debug", "info", "warn", "error"]);

function logRow(buildID: string, ordinal: number, entry: BuildLogEntry) {
  return {
    buildID,
    ordinal,
    timestamp: entry.time ? timestampDate(entry.time) : new Date(),
    level: (LEVELS.has(entry.level) ? entry.level : "info") as TemplateBuildLogsTable["level"],
    message: entry.message,
    step: stepName(entry.step) ?? null,
  };
}

/**
 * A node's step name: "base", "finalize" or the step's number as E2B numbers steps (1 is the
 * first: the SDK's stack traces hold the FROM call first), which is what the SDK reads; undefined
 * for none.
 */
function stepName(step: string): string | undefined {
  return step === "" ? undefined : step;
}
