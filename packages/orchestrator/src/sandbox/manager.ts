/**
 * The sandboxes of this node and their lifecycle: create (a warm pool entry, or a boot from the
 * template's snapshot or cold) → running → pause (freeze → checkpoint → release all but the files)
 * → paused → resume (the same boot from the memory image) → running; kill from any of them; end
 * times; lifecycle events; a watchdog for runtimes that die. The runtime itself comes from the
 * factory (sandbox/factory.ts); states and their moves are in sandbox/state.ts.
 */
import { randomInt } from "node:crypto";
import { availableParallelism } from "node:os";
import { CleanupStack, type Logger } from "@moat/shared";
import { buildKey, type SharedArtifacts } from "../artifacts/shared.js";
import type { ArtifactStore } from "../artifacts/store.js";
import { type EgressFields, EgressRegistry } from "../network/egress-rules.js";
import { NetworkPool } from "../network/network-pool.js";
import { MAX_SLOTS, NAME_PREFIX } from "../network/slot.js";
import { SLOT_REUSE_DELAY_MS, SlotPool } from "../network/slot-pool.js";
import { raiseCpuPriority } from "../runtime/cpu-priority.js";
import type { Runsc } from "../runtime/runsc.js";
import { commitImage, imageExists, removeImage } from "../snapshot/image.js";
import type { SandboxSnapshot } from "../snapshot/sandbox-snapshot.js";
import { seedUpper, type TemplateSnapshot } from "../snapshot/template-snapshot.js";
import type { VolumeStore } from "../storage/volumes.js";
import type { OperationObserver } from "../telemetry/prometheus.js";
import { BASE_BUILD_KEY, type TemplateBuild, type TemplateResolver } from "../template/store.js";
import { type CreateInput, diskSizeOf, resolveBuild, validateCreate } from "./create-input.js";
import { CreateQueue, DEFAULT_MAX_QUEUED, DEFAULT_QUEUE_TIMEOUT_MS } from "./create-queue.js";
import type { OutputLine } from "./envd-process.js";
import {
  InvalidSandboxConfigError,
  NodeBusyError,
  PauseFailedError,
  PublishedPauseMissingError,
  ResumeFailedError,
  SandboxExistsError,
  SandboxNotFoundError,
  SandboxStateError,
  SnapshotFailedError,
} from "./errors.js";
import { newLifecycleID, RunscSandboxFactory, type SandboxFactory } from "./factory.js";
import { type FaultKind, Faults } from "./faults.js";
import { type ForkOutcome, type ForkTarget, forkSandbox } from "./fork.js";
import { updateEgress } from "./network-update.js";
import { errorMessage, phaseTimer } from "./phase-timer.js";
import { type ReclaimReport, reclaim } from "./reclaim.js";
import { memoryImagePath, type SandboxRecord, sandboxDir, writeRecord } from "./record.js";
import { PausedSandboxStore } from "./relocation.js";
import { Sandbox } from "./sandbox.js";
import { SandboxSnapshots } from "./sandbox-snapshots.js";
import { TemplateSnapshots } from "./template-snapshots.js";
import { WarmPool } from "./warm-pool.js";

export type { CreateInput } from "./create-input.js";

export interface SandboxManagerOptions {
  dataDir: string;
  runsc: Runsc;
  templates: TemplateResolver;
  /** The node binary and envd's directory (ENVD_DIR) mounted into sandboxes. */
  nodeBinary: string;
  envdDir: string;
  logger: Logger;
  maxSandboxes: number;
  /**
   * Creates and resumes booting at once (restores, cold boots; a pool claim needs no turn); more
   * wait their turn in the node's queue (sandbox/create-queue.ts).
   */
  maxStarting: number;
  /** Creates and resumes waiting for a turn at most; more are refused with NodeBusyError (default 256). */
  maxQueued?: number;
  /** How long a create or resume waits for its turn before it fails (default 45 s). */
  queueTimeoutMs?: number;
  pidsLimit: number;
  envdReadyTimeoutMs: number;
  /** Failure injection for tests (MOAT_FAULTS); the steps are listed in sandbox/faults.ts. */
  faults?: ReadonlyMap<string, FaultKind>;
  /** Key of this node's template snapshots (snapshot/template-snapshot.ts); unset: cold starts only. */
  snapshotKey?: string;
  /** Ready, never-used sandboxes kept per template, restored from its snapshot; 0 disables. */
  poolSize: number;
  /** The most a template's pool grows to under bursts of creates (default: poolSize, no growth). */
  poolMaxSize?: number;
  /** A pool grown by a burst shrinks back to poolSize after this long without one (warm-pool.ts). */
  poolIdleMs?: number;
  /** Sandbox networks made ahead of time for creates and resumes; 0 disables. */
  networkPoolSize?: number;
  /**
   * Disk size of sandboxes (and build sandboxes) whose create or template names none, in MiB: the
   * most their writable layer may hold. 0: no limit.
   */
  diskSizeMB: number;
  /** Outbound connections one sandbox may have open at once (network/sandbox-network.ts). */
  maxConnectionsPerSandbox?: number;
  /** The node's volumes (sandboxes with volume mounts mount them). */
  volumes?: VolumeStore;
  /** Prefix of the node's named network namespaces (network/slot.ts; default NAME_PREFIX). */
  namePrefix?: string;
  /** The runtime; default the real one (runsc, the host's network). Unit tests pass fakes. */
  factory?: SandboxFactory;
  /** Sandboxes' egress rules by slot, which the node's resolver reads (default: a registry of its own). */
  egress?: EgressRegistry;
  /** Forks of one request restored at once (default: the host's cores). */
  forkConcurrency?: number;
  /** Shared artifacts: builds and snapshots this node lacks are fetched, what it makes is published. */
  shared?: SharedArtifacts;
  /**
   * Shared artifact storage: pauses publish the paused sandbox there, and a resume of one this
   * node does not hold fetches it (sandbox/relocation.ts). Unset: paused sandboxes stay here.
   */
  artifacts?: ArtifactStore;
}

export type SandboxEventType = "created" | "killed" | "expired" | "failed" | "pausing" | "paused" | "resumed";
export interface SandboxEvent {
  sandboxID: string;
  type: SandboxEventType;
  time: Date;
  reason: string;
}

/** How often running sandboxes are checked for a runtime that died (out of memory, crash). */
const WATCHDOG_INTERVAL_MS = 1000;
/** How long a cold create waits for a template's ready command before answering anyway. */
const COLD_READY_TIMEOUT_MS = 30_000;
/** When an auto-pause at the end time fails, the sandbox keeps running and it is tried again. */
const AUTO_PAUSE_RETRY_MS = 5000;

export class SandboxManager {
  /** Told each operation's duration (the node's Prometheus metrics, telemetry/prometheus.ts). */
  observe: OperationObserver | undefined;
  readonly factory: SandboxFactory;
  readonly faults: Faults;
  readonly snapshots: TemplateSnapshots;
  readonly pool: WarmPool;
  /** Snapshots of users' sandboxes, which creates and forks start from. */
  readonly sandboxSnapshots: SandboxSnapshots;
  private readonly sandboxes = new Map<string, Sandbox>();
  private readonly listeners = new Set<(event: SandboxEvent) => void>();
  private readonly networks: NetworkPool | undefined;
  /** Creates and resumes in flight, waiting for their turn or not (capacity, and background work waits for them). */
  private starting = 0;
  /** Turns to boot: creates and resumes restore a few at a time, the rest wait, fairly between teams. */
  readonly queue: CreateQueue;
  /** Ids of creates under way, registered or still waiting for their turn. */
  private readonly creating = new Set<string>();
  private readonly watchdog: NodeJS.Timeout;
  /** Sandboxes adopted mid-pause whose runsc state is being asked (reapDead). */
  private readonly checkingPauses = new Set<string>();
  /** Paused sandboxes in the artifact store; undefined without one. */
  private readonly published: PausedSandboxStore | undefined;
  /** Sandboxes being fetched from the artifact store for a resume. */
  private readonly fetching = new Set<string>();
  /** Killed sandboxes whose release runs on after the kill answered, by id. */
  private readonly releasing = new Map<string, { sandbox: Sandbox; done: Promise<void> }>();

  constructor(private readonly options: SandboxManagerOptions) {
    const { logger } = options;
    this.faults = new Faults(options.faults, logger);
    const busy = () => this.starting > 0;
    this.queue = new CreateQueue({
      concurrency: Math.max(1, options.maxStarting),
      maxQueued: options.maxQueued ?? DEFAULT_MAX_QUEUED,
      maxWaitMs: options.queueTimeoutMs ?? DEFAULT_QUEUE_TIMEOUT_MS,
    });
    if (options.factory) this.factory = options.factory;
    else {
      this.networks = new NetworkPool({
        // Never-used slots from a random place on: see SlotPool.
        slots: new SlotPool(
          MAX_SLOTS,
          SLOT_REUSE_DELAY_MS,
          Date.now,
          1 + randomInt(MAX_SLOTS),
          options.namePrefix,
        ),
        size: options.networkPoolSize ?? 0,
        logger,
        busy,
        maxConnections: options.maxConnectionsPerSandbox,
      });
      this.factory = new RunscSandboxFactory({
        ...options,
        networks: this.networks,
        egress: options.egress ?? new EgressRegistry(),
      });
    }
    const { shared } = options;
    this.snapshots = new TemplateSnapshots({
      key: options.snapshotKey,
      // A snapshot re-made here (another runtime's was shared, or none) goes to shared storage for
      // the nodes of this runtime; a new build's goes with the build (TemplateBuilder).
      onMade: shared
        ? (build) => {
            shared.store
              .has(buildKey(build.key))
              .then((published) => (published ? shared.publishTemplateSnapshot(build.key) : false))
              .catch((err: unknown) =>
                logger.warn({ err, buildID: build.key }, "publishing a re-made template snapshot failed"),
              );
          }
        : undefined,
      factory: this.factory,
      templates: options.templates,
      faults: this.faults,
      logger,
    });
    this.pool = new WarmPool({
      size: options.poolSize,
      maxSize: options.poolMaxSize,
      idleMs: options.poolIdleMs,
      // As many refill restores at once as boots of creates.
      concurrency: Math.max(1, options.maxStarting),
      factory: this.factory,
      snapshots: this.snapshots,
      templates: options.templates,
      logger,
      busy,
      diskSizeOf: (requested, build) => this.diskSizeOf(requested, build),
    });
    this.sandboxSnapshots = new SandboxSnapshots({
      dataDir: options.dataDir,
      factory: this.factory,
      faults: this.faults,
      logger,
      runtimeKey: options.snapshotKey,
      shared,
    });
    shared?.attach({
      buildsInUse: () => new Set(this.list().map((s) => s.record.buildKey ?? "")),
      removeBuild: async (buildID) => {
        await this.forgetBuild(buildID);
        if (!this.onBuildRemoved) throw new Error("the node cannot remove builds yet");
        await this.onBuildRemoved(buildID);
      },
      removeSnapshot: async (snapshotID) => {
        await this.sandboxSnapshots.remove(snapshotID, { localOnly: true });
      },
    });
    this.published = options.artifacts
      ? new PausedSandboxStore({
          store: options.artifacts,
          dataDir: options.dataDir,
          logger,
          runtimeKey: options.snapshotKey,
        })
      : undefined;
    this.watchdog = setInterval(() => this.reapDead(), WATCHDOG_INTERVAL_MS);
    this.watchdog.unref();
  }

  get(sandboxID: string): Sandbox {
    const sandbox = this.sandboxes.get(sandboxID);
    if (!sandbox) throw new SandboxNotFoundError(sandboxID);
    return sandbox;
  }

  list(): Sandbox[] {
    return [...this.sandboxes.values()];
  }

  /**
   * What the node's heartbeat reports: sandboxes not paused, creates and resumes under way
   * (waiting for their turn included), pool entries.
   */
  loadCounts(): { sandboxes: number; starting: number; poolReady: number } {
    let sandboxes = 0;
    for (const sandbox of this.sandboxes.values()) if (sandbox.state !== "paused") sandboxes++;
    return { sandboxes, starting: this.starting, poolReady: this.pool.entries().length };
  }

  /** Calls `listener` with every lifecycle event from now on; returns the unsubscribe function. */
  subscribe(listener: (event: SandboxEvent) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  async create(input: CreateInput): Promise<Sandbox> {
    validateCreate(input);
    const { options, factory } = this;
    const exists = () => this.sandboxes.has(input.sandboxID) || this.creating.has(input.sandboxID);
    if (exists()) throw new SandboxExistsError(input.sandboxID);
    // Its directory would be the killed one's, which is still being removed.
    await this.released(input.sandboxID);
    if (exists()) throw new SandboxExistsError(input.sandboxID);
    await this.fetchMissing(input);
    const source = input.snapshotID ? this.sandboxSnapshots.forCreate(input) : undefined;
    const build = source?.build ?? resolveBuild(this.options.templates, input.templateID, input.buildID);
    this.checkCapacity();
    if (exists()) throw new SandboxExistsError(input.sandboxID);

    const log = options.logger.child({ sandboxID: input.sandboxID });
    const timer = phaseTimer();
    // Counted as starting before a pool entry is claimed: the refill it triggers waits for this.
    this.starting++;
    this.creating.add(input.sandboxID);
    const demandEnded = source ? () => undefined : this.pool.demand(input, build);
    let pooled: Sandbox | undefined;
    let endTurn: (() => void) | undefined;
    try {
      // Creates waiting for their turn go first: a pool entry goes to the oldest of them.
      if (!source && this.queue.waiting === 0) pooled = this.pool.claim(input, build);
      if (!pooled) {
        endTurn = await this.queue.acquire(input.teamID);
        timer.lap("queued");
        // An entry may have been restored while it waited: then it needs no turn.
        if (!source) pooled = this.pool.claim(input, build);
        if (pooled) {
          endTurn();
          endTurn = undefined;
        }
      }
    } catch (err) {
      // Refused (the queue is full) or waited too long: nothing was taken.
      this.starting--;
      this.creating.delete(input.sandboxID);
      demandEnded();
      throw err;
    }
    pooled?.moveTo("starting");
    const cleanup = pooled?.cleanup ?? new CleanupStack();
    let sandbox: Sandbox | undefined = pooled;
    try {
      const record: SandboxRecord = {
        ...input,
        // A snapshot's disk is copied as it is: its size, even none.
        diskSizeMB: source ? source.snapshot.config.diskSizeMB : this.diskSizeOf(input.diskSizeMB, build),
        // The template's environment, user and workdir, unless the create names its own.
        envVars: { ...build.env, ...input.envVars },
        defaultUser: input.defaultUser || build.user || "",
        defaultWorkdir: input.defaultWorkdir || build.workdir || "",
        lowers: build.lowers,
        buildKey: build.key,
        dir: pooled?.record.dir ?? input.sandboxID,
        endTime: input.endTime.toISOString(),
        startTime: new Date().toISOString(),
        slotIndex: pooled?.record.slotIndex ?? 0,
        lifecycleID: pooled?.record.lifecycleID ?? newLifecycleID(input.sandboxID),
        state: "starting",
        kind: "user",
        startKind: pooled ? "pool" : "cold",
      };
      const dir = sandboxDir(options.dataDir, record.dir);
      // The record goes to disk first: after a crash at any later step, reclaim finds it and
      // releases the slot's network, the mount and the container by their derived names.
      await writeRecord(options.dataDir, record);
      if (pooled) {
        pooled.record = record;
        // Restored at a low CPU share (the refill must not slow the sandboxes in use): now it is one.
        await raiseCpuPriority(record.lifecycleID).catch((err: unknown) =>
          log.warn({ err }, "raising a pool entry's CPU share failed"),
        );
        await factory.applyEgress(pooled);
      } else {
        cleanup.push("sandbox directory", () => factory.removeDirectory(dir));
        sandbox = new Sandbox(record, dir, cleanup);
      }
      const created = sandbox as Sandbox;
      this.sandboxes.set(input.sandboxID, created);
      cleanup.push("registry entry", () => this.unregister(created));
      timer.lap("record");

      const lap = this.faults.after("create", timer.lap);
      if (source) await this.sandboxSnapshots.boot(created, source.snapshot, lap);
      else if (!pooled) await this.bootNew(created, build, lap);
      // A sandbox from a snapshot wakes with the source's token: proving it gets it its own.
      await factory.init(created, source?.snapshot.accessToken);
      timer.lap("init");
      this.faults.at("create:init");
      if (record.startKind === "cold" && build.startCmd) {
        // Booted without the build's snapshot (snapshots off, or not made yet by this runtime):
        // its start command runs now, as it was running in the snapshot.
        await factory
          .startAndWaitReady(
            created,
            {
              ...build,
              user: record.defaultUser || build.user,
              workdir: record.defaultWorkdir || build.workdir,
              env: record.envVars,
              accessToken: record.envdAccessToken || undefined,
            },
            undefined,
            { timeoutMs: COLD_READY_TIMEOUT_MS, intervalMs: 200 },
          )
          .catch((err: unknown) => log.warn({ err }, "the template's start command is not ready yet"));
        timer.lap("startCmd");
      }
      record.state = "running";
      await writeRecord(options.dataDir, record);
      this.faults.at("create:running");
      created.moveTo("running");
      this.armEnd(created);
      const timings = timer.done();
      log.info(
        { slot: record.slotIndex, hostAddress: created.hostAddress, startKind: record.startKind, ...timings },
        "sandbox created",
      );
      this.observe?.("create", timings.totalMs / 1000, { start: record.startKind ?? "cold" });
      if (record.startKind === "snapshot" && timings.runtime !== undefined)
        this.observe?.("restore", timings.runtime / 1000, { for: "create" });
      this.emit({ sandboxID: input.sandboxID, type: "created", reason: "" });
      return created;
    } catch (err) {
      log.warn({ err }, "sandbox create failed; releasing what it acquired");
      const release = sandbox ? factory.release(sandbox) : cleanup.run();
      await release.catch((releaseErr: unknown) =>
        log.error({ err: releaseErr }, "release after failed create"),
      );
      this.emit({ sandboxID: input.sandboxID, type: "failed", reason: errorMessage(err) });
      throw err;
    } finally {
      endTurn?.();
      demandEnded();
      this.creating.delete(input.sandboxID);
      this.starting--;
      sandbox?.markStarted();
    }
  }

  /**
   * Pauses a running sandbox: envd syncs the files and drops its connections, runsc saves memory
   * and processes to `<dir>/memory`, then everything but the directory is released. If anything
   * fails while the runtime still lives, the sandbox goes on running (PauseFailedError); if the
   * runtime is gone, it is paused with what was saved (the files at least), never half of each.
   */
  async pause(sandboxID: string, options: { memory?: boolean; reason?: string } = {}): Promise<Sandbox> {
    const sandbox = this.get(sandboxID);
    if (sandbox.state !== "running") throw new SandboxStateError(sandboxID, sandbox.state, "pause");
    sandbox.moveTo("pausing");
    sandbox.clearEnd();
    // Before ingress closes: the API and the proxy hold new traffic instead of sending it into
    // a sandbox that no longer answers.
    this.emit({ sandboxID, type: "pausing", reason: options.reason ?? "request" });
    const work = this.doPause(sandbox, options.memory ?? true, options.reason ?? "request");
    sandbox.transition = work;
    try {
      await work;
    } finally {
      sandbox.transition = undefined;
    }
    return sandbox;
  }

  /**
   * Resumes a paused sandbox in a fresh network slot: restores its memory image (or boots afresh
   * from its files when it has none, or when `reboot`), then /init again. On failure everything
   * the attempt took is released and the sandbox stays paused with its image (ResumeFailedError).
   * `generation`: the published pause to resume when this node does not hold it (or holds an
   * earlier pause of it): fetched from the artifact store first; if its resume fails, the fetched
   * copy is dropped again (the published one stays).
   */
  async resume(
    sandboxID: string,
    endTime: Date,
    options: { reboot?: boolean; generation?: number } = {},
  ): Promise<Sandbox> {
    if (Number.isNaN(endTime.getTime())) throw new InvalidSandboxConfigError("end_time is invalid");
    const fetched = options.generation ? await this.fetchPaused(sandboxID, options.generation) : false;
    const sandbox = this.get(sandboxID);
    if (sandbox.state !== "paused") throw new SandboxStateError(sandboxID, sandbox.state, "resume");
    try {
      this.checkCapacity();
    } catch (err) {
      if (fetched) await this.discard(sandbox);
      throw err;
    }
    sandbox.moveTo("resuming");
    this.starting++;
    // Its turn is waited for inside the transition: a kill meanwhile waits for it, as for a boot.
    const work = this.queue.acquire(sandbox.record.teamID).then(
      async (endTurn) => {
        try {
          await this.doResume(sandbox, endTime, options.reboot ?? false);
        } finally {
          endTurn();
        }
      },
      (err: unknown) => {
        // Refused, or waited too long: it never left paused.
        sandbox.moveTo("paused");
        throw err;
      },
    );
    sandbox.transition = work;
    try {
      await work;
    } catch (err) {
      // Not this node's to keep: the sandbox stays paused where it was published.
      if (fetched) await this.discard(sandbox);
      throw err;
    } finally {
      sandbox.transition = undefined;
      this.starting--;
    }
    return sandbox;
  }

  /**
   * Makes the published pause `generation` of a sandbox this node's own, paused, for a resume:
   * fetched from the artifact store unless this node holds that pause (or a later one) already. A
   * copy of an earlier pause (the sandbox ran elsewhere since) is dropped first. Answers whether
   * it fetched.
   */
  private async fetchPaused(sandboxID: string, generation: number): Promise<boolean> {
    const local = this.sandboxes.get(sandboxID);
    if (local && (local.state !== "paused" || (local.record.pauseGeneration ?? 0) >= generation))
      return false;
    const published = this.published;
    // Its own copy, if any, is of an earlier pause: never resumed in place of the published one.
    if (!published)
      throw new PublishedPauseMissingError(sandboxID, generation, "this node has no artifact store");
    if (this.fetching.has(sandboxID)) throw new SandboxStateError(sandboxID, "resuming", "resume");
    this.checkCapacity();
    await this.released(sandboxID);
    this.fetching.add(sandboxID);
    const log = this.options.logger.child({ sandboxID, generation });
    const timer = phaseTimer();
    try {
      if (local) {
        log.info({ localGeneration: local.record.pauseGeneration }, "dropping an earlier pause of a sandbox");
        await this.discard(local);
        // Its published pause, if any, is older than the one resumed: never needed again.
        await this.unpublish(local);
      }
      const dir = sandboxDir(this.options.dataDir, sandboxID);
      const record = await published.fetch(sandboxID, generation, dir);
      if (!record) throw new PublishedPauseMissingError(sandboxID, generation);
      timer.lap("fetch");
      try {
        // Its layers by this node's paths; its slot and runtime are this node's to give.
        record.dir = sandboxID;
        record.lowers = resolveBuild(
          this.options.templates,
          record.templateID,
          record.buildKey && record.buildKey !== BASE_BUILD_KEY ? record.buildKey : undefined,
        ).lowers;
        record.slotIndex = 0;
        record.lifecycleID = newLifecycleID(sandboxID);
        record.state = "paused";
        await writeRecord(this.options.dataDir, record);
      } catch (err) {
        await this.factory.removeDirectory(dir);
        throw err;
      }
      this.register(record, dir, "paused");
      log.info({ memory: record.memory, ...timer.done() }, "published paused sandbox fetched");
      return true;
    } finally {
      this.fetching.delete(sandboxID);
    }
  }

  /** Forgets a paused sandbox this node does not own (any more) without a lifecycle event. */
  private async discard(sandbox: Sandbox): Promise<void> {
    this.sandboxes.delete(sandbox.id);
    await this.factory
      .release(sandbox)
      .catch((err: unknown) =>
        this.options.logger.error({ err, sandboxID: sandbox.id }, "releasing a dropped paused sandbox"),
      );
  }

  /**
   * Saves a running sandbox's memory, processes and files as a snapshot that creates can start
   * from; the sandbox carries on (its TCP connections are reset). A failed snapshot leaves
   * nothing; a sandbox whose runtime did not survive it is released.
   */
  async snapshot(
    sandboxID: string,
    snapshotID: string,
    options: { ephemeral?: boolean } = {},
  ): Promise<SandboxSnapshot> {
    const sandbox = this.get(sandboxID);
    if (sandbox.state !== "running") throw new SandboxStateError(sandboxID, sandbox.state, "snapshot");
    this.sandboxSnapshots.checkNew(snapshotID);
    sandbox.moveTo("snapshotting");
    sandbox.clearEnd();
    const work = this.doSnapshot(sandbox, snapshotID, options.ephemeral ?? false);
    sandbox.transition = work;
    try {
      return await work;
    } finally {
      sandbox.transition = undefined;
    }
  }

  /**
   * Forks a running sandbox (sandbox/fork.ts): one snapshot, then a create per target from it.
   * Each outcome is a sandbox or the error that kept that fork from starting.
   */
  async fork(sandboxID: string, targets: readonly ForkTarget[]): Promise<ForkOutcome[]> {
    // Before the source is stopped for nothing.
    const taken = targets.find((t) => this.sandboxes.has(t.sandboxID));
    if (taken) throw new SandboxExistsError(taken.sandboxID);
    const concurrency = this.options.forkConcurrency ?? availableParallelism();
    const started = performance.now();
    const outcomes = await forkSandbox(this, sandboxID, targets, concurrency);
    this.observe?.("fork", (performance.now() - started) / 1000);
    return outcomes;
  }

  /** Removes a snapshot; sandboxes started from it have copies of its files and carry on. */
  deleteSnapshot(snapshotID: string): Promise<boolean> {
    return this.sandboxSnapshots.remove(snapshotID);
  }

  /**
   * Kills a sandbox (running or paused) and releases everything it holds. It answers once the
   * sandbox is stopped (sandbox/factory.ts: stop): nothing of it runs or answers any more. The
   * slow part of the release (runsc delete, unmounts, network, directory) runs on in the
   * background (`releases`); its slot, mounts and directory are not given to anyone before it
   * ends, and a crash in it is finished by the next start (its record says "stopping").
   */
  async kill(
    sandboxID: string,
    type: "killed" | "expired" | "failed" = "killed",
    reason = "request",
  ): Promise<void> {
    let sandbox = this.get(sandboxID);
    if (sandbox.state === "starting") {
      // Let the create finish (it is bounded by the envd ready timeout), then kill what it made;
      // a create that failed has already released everything.
      await sandbox.started;
      sandbox = this.get(sandboxID);
    }
    while (sandbox.transition) {
      // A pause or resume in flight ends in a whole state first.
      await sandbox.transition.catch(() => undefined);
      sandbox = this.get(sandboxID);
    }
    if (sandbox.state === "stopping") {
      await sandbox.stopping;
      return;
    }
    sandbox.moveTo("stopping");
    sandbox.clearEnd();
    sandbox.stopping = this.stop(sandbox, type, reason);
    await sandbox.stopping;
  }

  private async stop(sandbox: Sandbox, type: SandboxEventType, reason: string): Promise<void> {
    const { options, factory } = this;
    const sandboxID = sandbox.id;
    const log = options.logger.child({ sandboxID });
    const timer = phaseTimer();
    let stopped = false;
    try {
      try {
        // On disk before anything stops: from here on, a crash leaves it to the next start to
        // release. Clients are refused (a reset, not silence) before its network stack dies.
        sandbox.record.state = "stopping";
        await Promise.all([writeRecord(options.dataDir, sandbox.record), factory.refuse(sandbox)]);
        timer.lap("recordIngress");
        await factory.stop(sandbox);
        timer.lap("stop");
        stopped = true;
        // Before the answer: no node may resume a killed sandbox from the artifact store.
        await this.unpublish(sandbox);
      } catch (err) {
        log.warn({ err }, "stopping the sandbox at once failed; releasing it before answering");
      }
      if (!stopped) {
        // Clients fail at once instead of waiting on a sandbox that is going away.
        await factory
          .refuse(sandbox)
          .catch((err: unknown) => log.warn({ err }, "could not refuse traffic to a stopping sandbox"));
        timer.lap("ingress");
        await this.release(sandbox, timer.lap);
      }
    } finally {
      this.unregister(sandbox);
      const timings = timer.done();
      log.info({ type, reason, ...timings }, "sandbox stopped");
      this.observe?.("kill", timings.totalMs / 1000);
      this.emit({ sandboxID, type, reason });
    }
    if (stopped) {
      const done = this.releaseStopped(sandbox, log).finally(() => this.releasing.delete(sandboxID));
      this.releasing.set(sandboxID, { sandbox, done });
    }
  }

  /** Everything a killed sandbox holds goes, with its last output collected first. */
  private async release(sandbox: Sandbox, lap: (phase: string) => void): Promise<void> {
    await this.beforeRelease?.(sandbox).catch(() => undefined);
    lap("logs");
    await this.factory.release(sandbox);
    lap("release");
    await this.factory.settled();
    lap("deletions");
    await this.unpublish(sandbox);
  }

  /** The background half of a kill that stopped the sandbox; failures are left to the next start. */
  private async releaseStopped(sandbox: Sandbox, log: Logger): Promise<void> {
    const timer = phaseTimer();
    try {
      await this.release(sandbox, timer.lap);
      // Debug: the kill said "sandbox stopped" already; one line per event on the console.
      log.debug(timer.done(), "sandbox released");
    } catch (err) {
      // Its record says stopping: the next start releases what is left, and reaps what has no record.
      log.error({ err }, "releasing a killed sandbox failed");
    } finally {
      await this.afterRelease?.(sandbox).catch(() => undefined);
    }
  }

  /** Removes a sandbox from the registry, unless its id is another sandbox's by now. */
  private unregister(sandbox: Sandbox): void {
    if (this.sandboxes.get(sandbox.id) === sandbox) this.sandboxes.delete(sandbox.id);
  }

  /** Killed sandboxes' background releases have all ended (and the container deletions with them). */
  async releases(): Promise<void> {
    while (this.releasing.size > 0) await Promise.all([...this.releasing.values()].map((r) => r.done));
    await this.factory.settled();
  }

  /** A sandbox of this id killed a moment ago has released everything (its directory is the same). */
  private async released(sandboxID: string): Promise<void> {
    await this.releasing.get(sandboxID)?.done;
  }

  /**
   * Replaces a sandbox's egress rules (sandbox/network-update.ts). A published paused sandbox's
   * record is published again, so that a resume on another node applies the new rules; if that
   * fails it is unpublished rather than left with the old ones.
   */
  async updateNetwork(sandboxID: string, fields: EgressFields): Promise<Sandbox> {
    const sandbox = this.get(sandboxID);
    await updateEgress(sandbox, fields, { ...this.options, factory: this.factory });
    const r = sandbox.record;
    if (sandbox.state === "paused" && r.published && this.published) {
      await this.published.publishRecord(r).catch(async (err: unknown) => {
        this.options.logger.warn(
          { err, sandboxID },
          "republishing a paused sandbox's rules failed; unpublishing it",
        );
        await this.unpublish(sandbox);
        await writeRecord(this.options.dataDir, r);
      });
    }
    return sandbox;
  }

  /** Removes the sandbox's published pause, if any, from the artifact store (a failure only logs). */
  private async unpublish(sandbox: Sandbox): Promise<void> {
    const generation = sandbox.record.published;
    if (!generation || !this.published) return;
    sandbox.record.published = undefined;
    await this.published
      .remove(sandbox.id, generation)
      .catch((err: unknown) =>
        this.options.logger.warn(
          { err, sandboxID: sandbox.id, generation },
          "removing a published pause failed",
        ),
      );
  }

  updateEndTime(sandboxID: string, endTime: Date): void {
    const sandbox = this.get(sandboxID);
    // Mid-pause or mid-resume the outcome would drop it (a resume sets its own end): the caller
    // waits for the transition to end and sets it then.
    if (sandbox.state !== "running" && sandbox.state !== "paused") {
      throw new SandboxStateError(sandboxID, sandbox.state, "change the end time of");
    }
    sandbox.record.endTime = endTime.toISOString();
    // A paused sandbox has no timer here: its end time applies again once it resumes.
    if (sandbox.state === "running") this.armEnd(sandbox);
    void writeRecord(this.options.dataDir, sandbox.record).catch((err: unknown) =>
      this.options.logger.error({ err, sandboxID }, "could not persist end time"),
    );
  }

  /** Startup: takes back what the node's previous process left (sandbox/reclaim.ts). */
  async reclaim(): Promise<ReclaimReport> {
    await this.published?.clearScratch();
    const report = await reclaim({
      dataDir: this.options.dataDir,
      runsc: this.options.runsc,
      logger: this.options.logger,
      namePrefix: this.options.namePrefix ?? NAME_PREFIX,
      adopt: (record, dir, pid, pauseInterrupted) => this.adopt(record, dir, pid, pauseInterrupted),
      loadSnapshots: () => this.sandboxSnapshots.load(),
      keepPaused: (record, dir) => this.register(record, dir, "paused"),
      runningDirs: () => this.list().flatMap((s) => (s.state === "running" ? [s.dir] : [])),
    });
    this.networks?.fill();
    return report;
  }

  /**
   * Stops the end timers and empties the warm pools; sandboxes keep running for the next
   * orchestrator to adopt.
   */
  async close(): Promise<void> {
    clearInterval(this.watchdog);
    for (const sandbox of this.sandboxes.values()) sandbox.clearEnd();
    this.listeners.clear();
    await this.pool.close();
    // Killed sandboxes' releases end first: the network pool gives their slots back.
    await this.releases();
    await this.networks?.close();
  }

  /** Kills every sandbox, or every one not paused (node shutdown, and tests). */
  async killAll(options: { keepPaused?: boolean } = {}): Promise<void> {
    const doomed = this.list().filter((s) => !(options.keepPaused && s.state === "paused"));
    await Promise.allSettled(doomed.map((s) => this.kill(s.id, "killed", "node shutdown")));
    await this.releases();
  }

  /**
   * Makes creates from `templateID` fast: finds or builds its snapshot (a sandbox booted with envd
   * ready, checkpointed), then fills its warm pool. Until it is done, creates boot cold.
   */
  async prepareTemplate(
    templateID: string,
    opts: { buildID?: string; pool?: boolean; onOutput?: (line: OutputLine) => void } = {},
  ): Promise<TemplateSnapshot | undefined> {
    const prepared = await this.snapshots.prepare(templateID, opts);
    if (prepared && (opts.pool ?? true)) this.pool.fill(prepared.build.key);
    return prepared?.snapshot;
  }

  /** Every lower dir a sandbox of this node (running, paused or pooled) is mounted on. */
  lowersInUse(): Set<string> {
    const lowers = new Set<string>();
    const releasing = [...this.releasing.values()].map((r) => r.sandbox);
    for (const sandbox of [...this.sandboxes.values(), ...releasing, ...this.pool.entries()]) {
      for (const lower of sandbox.record.lowers ?? []) lowers.add(lower);
    }
    for (const lower of this.sandboxSnapshots.lowers()) lowers.add(lower);
    return lowers;
  }

  /** Removes an evicted build's files and the layers nothing else uses (set by the node: orchestrator.ts). */
  onBuildRemoved: ((buildID: string) => Promise<unknown>) | undefined;

  /** Runs before a stopping sandbox's directory goes (the node collects its last output: orchestrator.ts). */
  beforeRelease: ((sandbox: Sandbox) => Promise<unknown>) | undefined;

  /** Runs once a killed sandbox's release ended, either way (the node prunes template layers: orchestrator.ts). */
  afterRelease: ((sandbox: Sandbox) => Promise<unknown>) | undefined;

  /**
   * With shared artifacts: fetches the build or named snapshot a create names when this node
   * lacks it (concurrent creates wait for the same download).
   */
  private async fetchMissing(input: CreateInput): Promise<void> {
    const { shared, templates } = this.options;
    if (!shared) return;
    if (input.snapshotID) {
      if (this.sandboxSnapshots.get(input.snapshotID)) return;
      const snapshot = await shared.fetchSnapshot(input.snapshotID);
      if (snapshot) this.sandboxSnapshots.adopt(snapshot);
      return;
    }
    if (!input.buildID) return;
    if (templates.resolve(input.templateID, input.buildID)) shared.touchBuild(input.buildID);
    else await shared.fetchBuild(input.buildID);
  }

  /** Forgets a deleted build's snapshot and empties its warm pool. */
  async forgetBuild(buildKey: string): Promise<void> {
    this.snapshots.forget(buildKey);
    await this.pool.forget(buildKey);
  }

  /**
   * Boots a new sandbox from its template's snapshot when there is one that fits, else cold. A
   * snapshot that fails to restore is dropped (cold starts until the template is prepared again).
   */
  private async bootNew(sandbox: Sandbox, build: TemplateBuild, lap: (phase: string) => void): Promise<void> {
    const { record } = sandbox;
    const snapshot = await this.snapshots.forCreate(build);
    // A snapshot's restore brings back its mounts only: a sandbox with volumes boots cold.
    if (!snapshot || snapshot.memoryMB !== record.memoryMB || record.volumeMounts?.length) {
      await this.factory.boot(sandbox, { lap });
      return;
    }
    try {
      await this.factory.boot(sandbox, {
        image: snapshot.image,
        lap,
        seed: (upper) => seedUpper(snapshot, upper),
      });
      this.faults.at("snapshot:restored");
      record.startKind = "snapshot";
    } catch (err) {
      this.options.logger.warn(
        { err, sandboxID: record.sandboxID, templateID: record.templateID },
        "restoring the template snapshot failed; dropping it and starting cold",
      );
      this.snapshots.drop(build.key);
      await this.factory.reset(sandbox);
      await this.factory.boot(sandbox, { lap });
    }
  }

  private async doPause(sandbox: Sandbox, memory: boolean, reason: string): Promise<void> {
    const { options, factory } = this;
    const r = sandbox.record;
    const log = options.logger.child({ sandboxID: r.sandboxID });
    const timer = phaseTimer();
    const image = memoryImagePath(sandbox.dir);
    let saved = false;
    // Released as a pause: the container's delete need not be waited for.
    sandbox.backgroundDelete = true;
    try {
      r.state = "pausing";
      await writeRecord(options.dataDir, r);
      await factory.freeze(sandbox);
      timer.lap("freeze");
      this.faults.at("pause:frozen");
      if (memory) {
        await factory.checkpoint(sandbox, image);
        saved = true;
        timer.lap("checkpoint");
        this.faults.at("pause:checkpointed");
        await commitImage(image);
      }
      this.faults.at("pause:committed");
    } catch (err) {
      if (await factory.isRunning(sandbox)) {
        // Nothing is lost: the sandbox goes on running as it was.
        sandbox.backgroundDelete = false;
        await removeImage(image).catch(() => undefined);
        await factory.reopen(sandbox).catch((e: unknown) => log.error({ err: e }, "reopening ingress"));
        r.state = "running";
        await writeRecord(options.dataDir, r).catch(() => undefined);
        sandbox.moveTo("running");
        this.armEnd(sandbox);
        log.warn({ err }, "pause failed; the sandbox goes on running");
        this.emit({ sandboxID: r.sandboxID, type: "resumed", reason: "pause failed" });
        throw new PauseFailedError(r.sandboxID, errorMessage(err));
      }
      // The runtime is gone: keep what was saved. A whole image is kept; without one the sandbox
      // is paused with its files, which /freeze synced (resume then boots afresh).
      if (saved)
        saved = await commitImage(image).then(
          () => true,
          () => false,
        );
      if (!saved) await removeImage(image).catch(() => undefined);
      log.error(
        { err, memoryKept: saved },
        "pause failed after the runtime stopped; paused with what was saved",
      );
    }
    await this.settlePaused(sandbox, memory && saved, log, timer.lap);
    const timings = timer.done();
    log.info({ memory: r.memory, reason, ...timings }, "sandbox paused");
    this.observe?.("pause", timings.totalMs / 1000);
    this.emit({ sandboxID: r.sandboxID, type: "paused", reason });
  }

  private async doResume(sandbox: Sandbox, endTime: Date, reboot: boolean): Promise<void> {
    const { options, factory } = this;
    const previous = { ...sandbox.record };
    const r = sandbox.record;
    const log = options.logger.child({ sandboxID: r.sandboxID });
    const timer = phaseTimer();
    const image = memoryImagePath(sandbox.dir);
    const restore = !reboot && r.memory === true && (await imageExists(image));
    try {
      r.lifecycleID = newLifecycleID(r.sandboxID);
      await factory.boot(sandbox, {
        image: restore ? image : undefined,
        lap: this.faults.after("resume", timer.lap),
      });
      this.faults.at("resume:restored");
      await factory.init(sandbox);
      timer.lap("init");
      r.state = "running";
      r.endTime = endTime.toISOString();
      r.memory = undefined;
      r.startKind = restore ? "resume" : "cold";
      const published = r.published;
      r.published = undefined;
      await writeRecord(options.dataDir, r);
      r.published = published;
    } catch (err) {
      await factory
        .releaseRuntime(sandbox)
        .catch((releaseErr: unknown) => log.error({ err: releaseErr }, "release after failed resume"));
      sandbox.record = previous;
      sandbox.moveTo("paused");
      log.warn({ err }, "resume failed; the sandbox stays paused");
      throw new ResumeFailedError(r.sandboxID, errorMessage(err));
    }
    sandbox.moveTo("running");
    this.armEnd(sandbox);
    // The record says running: the image, and the published pause, have served.
    await removeImage(image).catch((err: unknown) => log.error({ err }, "removing a used memory image"));
    await this.unpublish(sandbox);
    const timings = timer.done();
    log.info(
      { slot: r.slotIndex, hostAddress: sandbox.hostAddress, restored: restore, ...timings },
      "sandbox resumed",
    );
    this.observe?.("resume", timings.totalMs / 1000, { from: restore ? "memory" : "files" });
    if (restore && timings.runtime !== undefined)
      this.observe?.("restore", timings.runtime / 1000, { for: "resume" });
    this.emit({ sandboxID: r.sandboxID, type: "resumed", reason: restore ? "memory" : "files" });
  }

  private async doSnapshot(
    sandbox: Sandbox,
    snapshotID: string,
    ephemeral: boolean,
  ): Promise<SandboxSnapshot> {
    const r = sandbox.record;
    const log = this.options.logger.child({ sandboxID: r.sandboxID, snapshotID });
    const timer = phaseTimer();
    let failure: unknown;
    try {
      // On disk first: a crash while the sandbox is stopped in place is resumed by reclaim.
      r.state = "snapshotting";
      await writeRecord(this.options.dataDir, r);
      const snapshot = await this.sandboxSnapshots.take(sandbox, snapshotID, ephemeral);
      const timings = timer.done();
      log.info({ ephemeral, ...timings }, "sandbox snapshotted");
      this.observe?.("snapshot", timings.totalMs / 1000);
      return snapshot;
    } catch (err) {
      failure = err;
      throw new SnapshotFailedError(r.sandboxID, errorMessage(err));
    } finally {
      const alive = failure === undefined || (await this.factory.isRunning(sandbox));
      r.state = "running";
      await writeRecord(this.options.dataDir, r).catch((err: unknown) =>
        log.error({ err }, "could not record the end of a snapshot"),
      );
      sandbox.moveTo("running");
      this.armEnd(sandbox);
      if (!alive) {
        // Stopped in place for good (runsc could not resume it): released, never left frozen.
        log.error({ err: failure }, "the sandbox did not survive a failed snapshot; releasing it");
        void this.kill(r.sandboxID, "failed", "snapshot failed").catch(() => undefined);
      }
    }
  }

  /**
   * Records the sandbox paused (with its memory image or only its files) and releases its
   * runtime. `lap` (a pause on request or at the end time): with an artifact store, the paused
   * sandbox is published first, after the release (its disk must be unmounted to be copied) and
   * before the record says paused; a crash in between leaves it pausing, which a restart settles
   * as paused (sandbox/reclaim.ts). A failed publish leaves it paused here only.
   */
  private async settlePaused(
    sandbox: Sandbox,
    memory: boolean,
    log: Logger,
    lap?: (phase: string) => void,
  ): Promise<void> {
    const r = sandbox.record;
    r.memory = memory;
    r.pauseGeneration = (r.pauseGeneration ?? 0) + 1;
    r.published = undefined;
    const release = () =>
      this.factory.releaseRuntime(sandbox).catch((err: unknown) =>
        // Named after the slot and container: the next start reaps whatever is left.
        log.error({ err }, "releasing a paused sandbox's runtime"),
      );
    // A sandbox with volumes needs them where it resumes: they live on this node.
    const publish = lap && this.published && !r.volumeMounts?.length ? this.published : undefined;
    if (publish) {
      await release();
      lap?.("release");
      try {
        await publish.publish(sandbox.dir, r);
        r.published = r.pauseGeneration;
        lap?.("publish");
      } catch (err) {
        log.warn({ err }, "publishing the paused sandbox failed; only this node can resume it");
      }
    }
    r.state = "paused";
    await writeRecord(this.options.dataDir, r);
    if (!publish) {
      await release();
      lap?.("release");
    }
    sandbox.moveTo("paused");
  }

  /** At the end time: pause when the sandbox asked for it, else kill. */
  private armEnd(sandbox: Sandbox): void {
    const sandboxID = sandbox.id;
    sandbox.scheduleEnd(() => {
      if (!sandbox.record.autoPause) {
        void this.kill(sandboxID, "expired", "end time reached").catch(() => undefined);
        return;
      }
      this.pause(sandboxID, {
        memory: sandbox.record.autoPauseMemory !== false,
        reason: "end time reached",
      }).catch((err: unknown) => {
        if (sandbox.state !== "running") return;
        this.options.logger.error({ err, sandboxID }, "auto-pause failed; retrying");
        sandbox.record.endTime = new Date(Date.now() + AUTO_PAUSE_RETRY_MS).toISOString();
        this.armEnd(sandbox);
      });
    });
  }

  private checkCapacity(): void {
    const { options } = this;
    // A killed sandbox holds its slot, mounts and disk until its release ends.
    const active = this.list().filter((s) => s.state !== "paused").length + this.releasing.size;
    if (active + this.starting >= options.maxSandboxes) {
      throw new NodeBusyError(`${options.maxSandboxes} sandboxes already on this node`);
    }
  }

  private diskSizeOf(requested: number, build: Pick<TemplateBuild, "diskSizeMB">): number {
    return diskSizeOf(requested, build, this.options.diskSizeMB);
  }

  /**
   * A sandbox whose runtime process is gone (the host killed it at its memory limit, or it
   * crashed) is released like a kill, with a `failed` event.
   */
  private reapDead(): void {
    for (const sandbox of this.sandboxes.values()) {
      if (sandbox.state !== "running" || sandbox.runtimePID === undefined) continue;
      if (sandbox.pauseInterrupted) void this.checkInterruptedPause(sandbox);
      try {
        process.kill(sandbox.runtimePID, 0);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== "ESRCH") continue;
        if (sandbox.pauseInterrupted) {
          void this.settleInterruptedPause(sandbox);
          continue;
        }
        this.options.logger.warn(
          { sandboxID: sandbox.id, pid: sandbox.runtimePID },
          "sandbox runtime exited",
        );
        void this.kill(sandbox.id, "failed", "sandbox runtime exited (out of memory or crashed)").catch(
          (killErr: unknown) =>
            this.options.logger.error({ err: killErr, sandboxID: sandbox.id }, "release failed"),
        );
      }
    }
  }

  /**
   * A finished checkpoint leaves its container stopped while runsc's process may linger until a
   * delete that nobody will run: runsc's own word settles such a sandbox without waiting for it.
   */
  private async checkInterruptedPause(sandbox: Sandbox): Promise<void> {
    if (this.checkingPauses.has(sandbox.id)) return;
    this.checkingPauses.add(sandbox.id);
    try {
      // Gone, or stopped: the checkpoint ended. An error says nothing; the next tick asks again.
      const state = await this.options.runsc.state(sandbox.record.lifecycleID).catch(() => null);
      const ended = state === undefined || state?.status === "stopped";
      if (ended && sandbox.state === "running" && sandbox.pauseInterrupted)
        await this.settleInterruptedPause(sandbox);
    } finally {
      this.checkingPauses.delete(sandbox.id);
    }
  }

  /**
   * The runtime of a sandbox adopted mid-pause exited: the earlier process's checkpoint finished
   * (or failed) without anyone to commit it. Its files are whole (/freeze synced them before the
   * checkpoint), its memory image is not known to be: paused with the files, as a pause that
   * lost its runtime is. A resume boots afresh from them.
   */
  private async settleInterruptedPause(sandbox: Sandbox): Promise<void> {
    const r = sandbox.record;
    const log = this.options.logger.child({ sandboxID: r.sandboxID });
    sandbox.moveTo("pausing");
    sandbox.pauseInterrupted = false;
    sandbox.backgroundDelete = true;
    sandbox.clearEnd();
    try {
      await removeImage(memoryImagePath(sandbox.dir));
      await this.settlePaused(sandbox, false, log);
      log.warn("the runtime stopped after a pause an earlier process began; paused with its files");
      this.emit({ sandboxID: r.sandboxID, type: "paused", reason: "interrupted pause" });
    } catch (err) {
      log.error({ err }, "settling an interrupted pause failed; releasing the sandbox");
      await this.kill(r.sandboxID, "failed", "interrupted pause").catch(() => undefined);
    }
  }

  /** A sandbox found running after a restart: registered with its runtime as it is. */
  private adopt(record: SandboxRecord, dir: string, runtimePID: number, pauseInterrupted: boolean): void {
    const sandbox = this.register(record, dir, "running");
    this.factory.adoptRuntime(sandbox, runtimePID);
    if (pauseInterrupted) sandbox.pauseInterrupted = true;
    if (record.state !== "running") {
      record.state = "running";
      void writeRecord(this.options.dataDir, record).catch(() => undefined);
    }
    this.armEnd(sandbox);
  }

  private register(record: SandboxRecord, dir: string, state: "running" | "paused"): Sandbox {
    const cleanup = new CleanupStack();
    cleanup.push("sandbox directory", () => this.factory.removeDirectory(dir));
    const sandbox = new Sandbox(record, dir, cleanup, state);
    cleanup.push("registry entry", () => this.unregister(sandbox));
    sandbox.markStarted();
    this.sandboxes.set(record.sandboxID, sandbox);
    return sandbox;
  }

  private emit(event: Omit<SandboxEvent, "time">): void {
    const full = { ...event, time: new Date() };
    for (const listener of this.listeners) listener(full);
  }
}
