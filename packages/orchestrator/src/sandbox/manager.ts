/**
 * The sandboxes of this node: create (slot → network → rootfs → runsc → envd ready → /init), pause
 * (freeze → checkpoint → release all but the files), resume (the same boot from the memory image),
 * kill, end times, lifecycle events, and reclaim after a restart. Every resource a step acquires is
 * pushed onto a cleanup stack right away, so a failure at any step releases exactly what was taken.
 */
import { randomBytes, randomInt } from "node:crypto";
import { mkdir, readFile, rename, rm, writeFile } from "node:fs/promises";
import path from "node:path";
import { CleanupStack, ENVD_PORT, type Logger, runCommand } from "@moat/shared";
import { deleteLink, deleteNamespace, listLinks, listNamespaces } from "../network/netns.js";
import { NetworkPool } from "../network/network-pool.js";
import {
  closeIngress,
  createSandboxNetwork,
  destroySandboxNetwork,
  openIngress,
  refuseIngress,
} from "../network/sandbox-network.js";
import { MAX_SLOTS, Slot, slotIndexOf } from "../network/slot.js";
import { SLOT_REUSE_DELAY_MS, SlotPool } from "../network/slot-pool.js";
import { BACKGROUND_CPU_SHARES, raiseCpuPriority } from "../runtime/cpu-priority.js";
import { sandboxSpec } from "../runtime/oci-spec.js";
import type { Runsc } from "../runtime/runsc.js";
import { commitImage, imageExists, prepareImage, removeImage } from "../snapshot/image.js";
import {
  findSnapshot,
  pruneSnapshots,
  saveUpper,
  seedUpper,
  snapshotDir,
  snapshotPaths,
  type TemplateSnapshot,
} from "../snapshot/template-snapshot.js";
import {
  detachLoop,
  diskPaths,
  loopDevicesUnder,
  MAX_DISK_SIZE_MB,
  MIN_DISK_SIZE_MB,
  mountDisk,
  mountedDevices,
  removeDisk,
  unmountDisk,
} from "../storage/disk.js";
import {
  mountRootfs,
  mountsUnder,
  removeSandboxDir,
  rootfsPaths,
  unmountOverlay,
  unmountRootfs,
} from "../storage/overlay.js";
import type { TemplateBuild, TemplateResolver } from "../template/store.js";
import { freezeEnvd, initEnvd, waitForEnvd, warmEnvd } from "./envd-client.js";
import { type OutputLine, runInSandbox, startInSandbox } from "./envd-process.js";
import {
  InvalidSandboxConfigError,
  NodeBusyError,
  PauseFailedError,
  ResumeFailedError,
  SandboxExistsError,
  SandboxNotFoundError,
  SandboxStateError,
  TemplateNotFoundError,
} from "./errors.js";
import { memoryImagePath, readRecords, type SandboxRecord, sandboxDir, writeRecord } from "./record.js";
import { Sandbox } from "./sandbox.js";

export interface SandboxManagerOptions {
  dataDir: string;
  runsc: Runsc;
  templates: TemplateResolver;
  /** The node binary and envd's directory (ENVD_DIR) mounted into sandboxes. */
  nodeBinary: string;
  envdDir: string;
  logger: Logger;
  maxSandboxes: number;
  /** Creates in flight at once; more are refused with NodeBusyError rather than queued forever. */
  maxStarting: number;
  pidsLimit: number;
  envdReadyTimeoutMs: number;
  /**
   * Failure injection for tests (MOAT_FAULTS): a named step throws ("error") or the process dies
   * there ("crash"). Steps: create:<phase> and resume:<phase> once a boot phase is done (network,
   * rootfs, runtime, envdReady), create:init, create:running, pause:frozen, pause:checkpointed,
   * pause:committed, resume:restored, snapshot:restored, snapshot:checkpointed, and in template
   * builds build:sandbox (a step's sandbox is up), build:layer (its layer made, not yet in place)
   * and build:committed (the manifest written, no snapshot yet).
   */
  faults?: ReadonlyMap<string, "error" | "crash">;
  /** Key of this node's template snapshots (snapshot/template-snapshot.ts); unset: cold starts only. */
  snapshotKey?: string;
  /** Ready, never-used sandboxes kept per template, restored from its snapshot; 0 disables. */
  poolSize: number;
  /** Sandbox networks made ahead of time for creates and resumes; 0 disables. */
  networkPoolSize?: number;
  /**
   * Disk size of sandboxes (and build sandboxes) whose create or template names none, in MiB: the
   * most their writable layer may hold. 0: no limit.
   */
  diskSizeMB: number;
  /** Outbound connections one sandbox may have open at once (network/sandbox-network.ts). */
  maxConnectionsPerSandbox?: number;
}

export interface CreateInput {
  sandboxID: string;
  templateID: string;
  /** The template build; empty for the base template. */
  buildID?: string;
  teamID: string;
  vcpu: number;
  memoryMB: number;
  /** Most the writable layer may hold, in MiB; 0: the node's default (options.diskSizeMB). */
  diskSizeMB: number;
  envVars: Record<string, string>;
  metadata: Record<string, string>;
  envdAccessToken: string;
  allowInternetAccess: boolean;
  defaultUser: string;
  defaultWorkdir: string;
  /** At the end time, pause instead of kill (keeping memory unless autoPauseMemory is false). */
  autoPause?: boolean;
  autoPauseMemory?: boolean;
  endTime: Date;
}

export type SandboxEventType = "created" | "killed" | "expired" | "failed" | "paused" | "resumed";
export interface SandboxEvent {
  sandboxID: string;
  type: SandboxEventType;
  time: Date;
  reason: string;
}

const SANDBOX_ID = /^[a-z0-9]{1,63}$/;
/** How often running sandboxes are checked for a runtime that died (out of memory, crash). */
const WATCHDOG_INTERVAL_MS = 1000;
/** How long a template's ready command may take to succeed before the snapshot (as E2B). */
const READY_TIMEOUT_MS = 10 * 60_000;
const READY_INTERVAL_MS = 2000;
/** E2B's ready command when a template has a start command and names none. */
const DEFAULT_READY_CMD = "sleep 20";
/** How long a cold create waits for a template's ready command before answering anyway. */
const COLD_READY_TIMEOUT_MS = 30_000;
/**
 * A claim's refill starts this long after it: a restore takes the CPU for a second or two, and
 * on a small node it doubled the first commands' time in the sandbox just handed out (they run
 * at once; the refill also runs at a low CPU share, runtime/cpu-priority.ts).
 */
const POOL_REFILL_DELAY_MS = 1_000;
/** When a pool refill fails, the next try waits this long. */
const POOL_RETRY_MS = 5000;
/** When an auto-pause at the end time fails, the sandbox keeps running and it is tried again. */
const AUTO_PAUSE_RETRY_MS = 5000;

export class SandboxManager {
  private readonly sandboxes = new Map<string, Sandbox>();
  private readonly slots = new SlotPool(MAX_SLOTS, SLOT_REUSE_DELAY_MS, Date.now, 1 + randomInt(MAX_SLOTS));
  private readonly listeners = new Set<(event: SandboxEvent) => void>();
  private starting = 0;
  private readonly watchdog: NodeJS.Timeout;
  /** Sandboxes adopted mid-pause whose runsc state is being asked (reapDead). */
  private readonly checkingPauses = new Set<string>();
  /** Container deletions a pause left running in the background; kill and killAll wait for them. */
  private readonly deletions = new Set<Promise<void>>();
  private readonly snapshots = new Map<string, TemplateSnapshot>();
  /** Warm pools: restored sandboxes nobody has claimed yet, per template (not in `sandboxes`). */
  private readonly pools = new Map<string, Sandbox[]>();
  private readonly filling = new Set<string>();
  /** Builds whose snapshot is being re-made in the background. */
  private readonly preparing = new Set<string>();
  private closed = false;
  private readonly networks: NetworkPool;

  constructor(private readonly options: SandboxManagerOptions) {
    this.watchdog = setInterval(() => this.reapDead(), WATCHDOG_INTERVAL_MS);
    this.watchdog.unref();
    this.networks = new NetworkPool(
      this.slots,
      options.networkPoolSize ?? 0,
      options.logger,
      () => this.starting > 0,
      options.maxConnectionsPerSandbox,
    );
  }

  get(sandboxID: string): Sandbox {
    const sandbox = this.sandboxes.get(sandboxID);
    if (!sandbox) throw new SandboxNotFoundError(sandboxID);
    return sandbox;
  }

  list(): Sandbox[] {
    return [...this.sandboxes.values()];
  }

  /** Calls `listener` with every lifecycle event from now on; returns the unsubscribe function. */
  subscribe(listener: (event: SandboxEvent) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  async create(input: CreateInput): Promise<Sandbox> {
    validate(input);
    const { options } = this;
    if (this.sandboxes.has(input.sandboxID)) throw new SandboxExistsError(input.sandboxID);
    const build = this.resolveBuild(input.templateID, input.buildID);
    this.checkCapacity();

    const log = options.logger.child({ sandboxID: input.sandboxID });
    const timer = phaseTimer();
    // Counted as starting before a pool entry is claimed: the refill it triggers waits for this.
    this.starting++;
    const pooled = this.claimPooled(input, build);
    const cleanup = pooled?.cleanup ?? new CleanupStack();
    let sandbox: Sandbox | undefined = pooled;
    try {
      const record: SandboxRecord = {
        ...input,
        diskSizeMB: this.diskSizeOf(input.diskSizeMB, build),
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
        startKind: pooled ? "pool" : "cold",
      };
      const dir = sandboxDir(options.dataDir, record.dir);
      // The record goes to disk first: after a crash at any later step, reclaim finds it and
      // releases the slot's network, the mount and the container by their derived names.
      await writeRecord(options.dataDir, record);
      if (pooled) {
        pooled.record = record;
        // Restored at a low CPU share (the refill must not slow the sandboxes in use): now it is one.
        await raiseCpuPriority(pooled.record.lifecycleID).catch((err: unknown) =>
          options.logger.warn({ err, sandboxID: input.sandboxID }, "raising a pool entry's CPU share failed"),
        );
      } else {
        cleanup.push("sandbox directory", () => removeSandboxDir(dir));
        sandbox = new Sandbox(record, dir, cleanup);
      }
      const created = sandbox as Sandbox;
      this.sandboxes.set(input.sandboxID, created);
      cleanup.push("registry entry", () => this.sandboxes.delete(input.sandboxID));
      timer.lap("record");

      if (!pooled) await this.bootNew(created, build, this.faultAfter("create", timer.lap));
      await this.init(created);
      timer.lap("init");
      this.fault("create:init");
      if (record.startKind === "cold" && build.startCmd) {
        // Booted without the build's snapshot (snapshots off, or not made yet by this runtime):
        // its start command runs now, as it was running in the snapshot.
        await this.startAndWaitReady(
          created.hostAddress,
          {
            ...build,
            user: record.defaultUser || build.user,
            workdir: record.defaultWorkdir || build.workdir,
            env: record.envVars,
            accessToken: record.envdAccessToken || undefined,
          },
          undefined,
          { timeoutMs: COLD_READY_TIMEOUT_MS, intervalMs: 200 },
        ).catch((err: unknown) => log.warn({ err }, "the template's start command is not ready yet"));
        timer.lap("startCmd");
      }
      record.state = "running";
      await writeRecord(options.dataDir, record);
      this.fault("create:running");
      created.state = "running";
      this.armEnd(created);
      log.info(
        {
          slot: record.slotIndex,
          hostAddress: created.hostAddress,
          startKind: record.startKind,
          ...timer.done(),
        },
        "sandbox created",
      );
      this.emit({ sandboxID: input.sandboxID, type: "created", reason: "" });
      return created;
    } catch (err) {
      log.warn({ err }, "sandbox create failed; releasing what it acquired");
      await releaseAll(sandbox, cleanup).catch((releaseErr: unknown) =>
        log.error({ err: releaseErr }, "release after failed create"),
      );
      this.emit({ sandboxID: input.sandboxID, type: "failed", reason: errorMessage(err) });
      throw err;
    } finally {
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
    sandbox.state = "pausing";
    sandbox.clearEnd();
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
   */
  async resume(sandboxID: string, endTime: Date, options: { reboot?: boolean } = {}): Promise<Sandbox> {
    const sandbox = this.get(sandboxID);
    if (sandbox.state !== "paused") throw new SandboxStateError(sandboxID, sandbox.state, "resume");
    if (Number.isNaN(endTime.getTime())) throw new InvalidSandboxConfigError("end_time is invalid");
    this.checkCapacity();
    sandbox.state = "resuming";
    this.starting++;
    const work = this.doResume(sandbox, endTime, options.reboot ?? false);
    sandbox.transition = work;
    try {
      await work;
    } finally {
      sandbox.transition = undefined;
      this.starting--;
    }
    return sandbox;
  }

  /** Kills a sandbox (running or paused) and releases everything it holds. */
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
      await releaseAll(sandbox, sandbox.cleanup);
      return;
    }
    sandbox.state = "stopping";
    sandbox.clearEnd();
    const timer = phaseTimer();
    try {
      // Clients fail at once instead of waiting on a sandbox that is going away.
      const slot = sandbox.slot;
      if (slot) {
        await refuseIngress(slot).catch((err: unknown) =>
          this.options.logger.warn({ err, sandboxID }, "could not refuse traffic to a stopping sandbox"),
        );
      }
      timer.lap("ingress");
      await releaseAll(sandbox, sandbox.cleanup);
      timer.lap("release");
      await Promise.all(this.deletions);
      timer.lap("deletions");
    } finally {
      this.sandboxes.delete(sandboxID);
      this.options.logger.info({ sandboxID, type, reason, ...timer.done() }, "sandbox stopped");
      this.emit({ sandboxID, type, reason });
    }
  }

  updateEndTime(sandboxID: string, endTime: Date): void {
    const sandbox = this.get(sandboxID);
    sandbox.record.endTime = endTime.toISOString();
    // A paused sandbox has no timer here: its end time applies again once it resumes.
    if (sandbox.state === "running") this.armEnd(sandbox);
    void writeRecord(this.options.dataDir, sandbox.record).catch((err: unknown) =>
      this.options.logger.error({ err, sandboxID }, "could not persist end time"),
    );
  }

  /**
   * Startup reconcile: adopt the sandboxes whose container, network and mount survived, keep the
   * paused ones (and settle a pause a crash interrupted), release everything of the rest, and reap
   * what no record owns (containers, namespaces, links, mounts).
   */
  async reclaim(): Promise<{ adopted: string[]; paused: string[]; released: string[]; reaped: string[] }> {
    const { options } = this;
    const adopted: string[] = [];
    const paused: string[] = [];
    const released: string[] = [];
    const reaped: string[] = [];
    const containers = new Map((await options.runsc.list()).map((c) => [c.id, c]));
    const namespaces = new Set(await listNamespaces());
    const keptContainers = new Set<string>();
    const keptSlots = new Set<number>();

    for (const { dir: dirName, record } of await readRecords(options.dataDir)) {
      const dir = sandboxDir(options.dataDir, dirName);
      const container = record ? containers.get(record.lifecycleID) : undefined;
      const slot = record?.slotIndex ? new Slot(record.slotIndex) : undefined;
      // A committed image means the checkpoint finished and the runtime stopped, whatever runsc
      // still says about a process the host has not reaped yet.
      const checkpointed = record?.state === "pausing" && (await imageExists(memoryImagePath(dir)));
      const live =
        (record?.state === "running" || record?.state === "pausing") &&
        !checkpointed &&
        container?.status === "running" &&
        (await processAlive(container.pid)) &&
        slot !== undefined &&
        namespaces.has(slot.outerNamespace) &&
        namespaces.has(slot.guestNamespace);
      if (live && record && slot && container) {
        // A pause that died before its checkpoint: the sandbox simply goes on running.
        if (record.state === "pausing") await openIngress(slot).catch(() => undefined);
        await removeImage(memoryImagePath(dir));
        const wasPausing = record.state === "pausing";
        this.adopt(record, dir, container.pid);
        if (wasPausing) this.get(record.sandboxID).pauseInterrupted = true;
        keptContainers.add(record.lifecycleID);
        keptSlots.add(slot.index);
        adopted.push(record.sandboxID);
        continue;
      }
      if (record && (record.state === "paused" || record.state === "pausing")) {
        // Paused, or a pause whose runtime is gone: whatever image was committed is kept, and the
        // files always are.
        if (record.state === "pausing") {
          await options.runsc.destroy(record.lifecycleID).catch(() => undefined);
          if (slot) await destroySandboxNetwork(slot).catch(() => undefined);
          await unmountRootfs(dir);
          record.memory = await imageExists(memoryImagePath(dir));
          record.state = "paused";
          await writeRecord(options.dataDir, record);
        }
        await prepareImage(memoryImagePath(dir));
        this.registerPaused(record, dir);
        paused.push(record.sandboxID);
        continue;
      }
      if (record) await options.runsc.destroy(record.lifecycleID).catch(() => undefined);
      if (slot) await destroySandboxNetwork(slot).catch(() => undefined);
      await removeSandboxDir(dir);
      released.push(record?.sandboxID ?? dirName);
    }

    for (const id of containers.keys()) {
      if (keptContainers.has(id)) continue;
      await options.runsc.destroy(id);
      reaped.push(`container ${id}`);
    }
    for (const name of await listNamespaces()) {
      const index = slotIndexOf(name);
      if (index === undefined || keptSlots.has(index)) continue;
      await deleteNamespace(name);
      reaped.push(`netns ${name}`);
    }
    for (const name of await listLinks()) {
      const index = slotIndexOf(name);
      if (index === undefined || keptSlots.has(index)) continue;
      await deleteLink(name);
      reaped.push(`link ${name}`);
    }
    const running = this.list().filter((s) => s.state === "running");
    const keptMounts = new Set(
      running.flatMap((s) => [path.join(s.dir, "rootfs"), diskPaths(s.dir).mountPoint]),
    );
    const sandboxesDir = path.join(options.dataDir, "sandboxes");
    const stale = (await mountsUnder(sandboxesDir)).filter((m) => !keptMounts.has(m));
    // Per sandbox: its overlay first, then the disk under it.
    for (const dir of new Set(stale.map((m) => path.dirname(m)))) await unmountRootfs(dir);
    reaped.push(...stale.map((m) => `mount ${m}`));
    // A loop device no mount uses (a crash between attaching and mounting); one a lazy unmount
    // still holds detaches itself once free.
    const mounted = await mountedDevices();
    for (const loop of await loopDevicesUnder(sandboxesDir)) {
      if (mounted.has(loop.device)) continue;
      await detachLoop(loop.device);
      reaped.push(`loop ${loop.device} (${loop.backingFile})`);
    }
    options.logger.info({ adopted, paused, released, reaped }, "reclaim finished");
    this.networks.fill();
    return { adopted, paused, released, reaped };
  }

  /**
   * Stops the end timers and empties the warm pools; sandboxes keep running for the next
   * orchestrator to adopt.
   */
  async close(): Promise<void> {
    this.closed = true;
    clearInterval(this.watchdog);
    for (const sandbox of this.sandboxes.values()) sandbox.clearEnd();
    this.listeners.clear();
    const entries = [...this.pools.values()].flat();
    this.pools.clear();
    await Promise.allSettled(entries.map((entry) => releaseAll(entry, entry.cleanup)));
    await this.networks.close();
    await Promise.all(this.deletions);
  }

  /**
   * Makes creates from `templateID` fast: finds or builds its snapshot (a sandbox booted with envd
   * ready, checkpointed), then fills its warm pool. Until it is done, creates boot cold.
   */
  async prepareTemplate(
    templateID: string,
    opts: { buildID?: string; pool?: boolean; onOutput?: (line: OutputLine) => void } = {},
  ): Promise<TemplateSnapshot | undefined> {
    const { options } = this;
    if (!options.snapshotKey) return undefined;
    const build = this.resolveBuild(templateID, opts.buildID);
    const dir = snapshotDir(build.dir, options.snapshotKey);
    const snapshot =
      (await findSnapshot(templateID, dir, build)) ?? (await this.buildSnapshot(build, dir, opts.onOutput));
    this.snapshots.set(build.key, snapshot);
    const pruned = await pruneSnapshots(dir);
    if (pruned.length > 0) options.logger.info({ templateID, pruned }, "old template snapshots removed");
    if (opts.pool ?? true) this.fillPool(build.key);
    return snapshot;
  }

  /** Ready entries in a template build's warm pool ("base" for the base template). */
  poolCount(buildKey: string): number {
    return this.pools.get(buildKey)?.length ?? 0;
  }

  /**
   * Gives `to` the snapshot `from` has (hard links: neither is ever written), when `from` has one
   * of this runtime. The builds must start the same sandboxes (same layers, settings, commands).
   */
  async reuseSnapshot(from: TemplateBuild, to: TemplateBuild): Promise<boolean> {
    const key = this.options.snapshotKey;
    if (!key) return false;
    const source = snapshotDir(from.dir, key);
    if (!(await findSnapshot(from.templateID, source, from))) return false;
    const target = snapshotDir(to.dir, key);
    await mkdir(path.dirname(target), { recursive: true });
    await rm(`${target}.partial`, { recursive: true, force: true });
    await runCommand(["cp", "-al", source, `${target}.partial`]);
    await rename(`${target}.partial`, target);
    const snapshot = await findSnapshot(to.templateID, target, to);
    if (snapshot) this.snapshots.set(to.key, snapshot);
    return snapshot !== undefined;
  }

  /** Every lower dir a sandbox of this node (running, paused or pooled) is mounted on. */
  lowersInUse(): Set<string> {
    const lowers = new Set<string>();
    const all = [...this.sandboxes.values(), ...[...this.pools.values()].flat()];
    for (const sandbox of all) for (const lower of sandbox.record.lowers ?? []) lowers.add(lower);
    return lowers;
  }

  /** Forgets a deleted build's snapshot and empties its warm pool. */
  async forgetBuild(buildKey: string): Promise<void> {
    this.snapshots.delete(buildKey);
    const entries = this.pools.get(buildKey) ?? [];
    this.pools.delete(buildKey);
    await Promise.allSettled(entries.map((entry) => releaseAll(entry, entry.cleanup)));
  }

  /**
   * A sandbox of its own for a template build step: booted cold on `lowers` with an empty
   * writable layer, not registered, released like any sandbox after a crash.
   */
  async startBuildSandbox(
    templateID: string,
    lowers: string[],
    size: { vcpu: number; memoryMB: number; diskSizeMB?: number },
    prepareUpper?: (upper: string) => Promise<void>,
  ): Promise<Sandbox> {
    const sandbox = await this.newInstance(
      { templateID, key: `build-${templateID}`, lowers, ...size },
      `build-${randomBytes(5).toString("hex")}`,
      "starting",
    );
    try {
      await this.boot(sandbox, undefined, () => undefined, prepareUpper);
      return sandbox;
    } catch (err) {
      await releaseAll(sandbox, sandbox.cleanup).catch(() => undefined);
      throw err;
    }
  }

  /**
   * Stops a build sandbox; with `keepUpper`, its writable layer (what the step changed) is moved
   * there first. Everything else it held is released.
   */
  async stopBuildSandbox(sandbox: Sandbox, keepUpper?: string): Promise<void> {
    try {
      // Released as after a pause: the container's delete, which waits for the host to reap the
      // killed sandbox (~1.5 s here), runs in the background; the process is gone before the
      // unmount.
      sandbox.state = "pausing";
      sandbox.stopping = "build";
      await sandbox.runtime.run();
      resetRuntime(sandbox);
      if (keepUpper) await keepWritableLayer(sandbox, keepUpper);
    } finally {
      await releaseAll(sandbox, sandbox.cleanup);
    }
  }

  /** Kills every sandbox, or every one not paused (node shutdown, and tests). */
  async killAll(options: { keepPaused?: boolean } = {}): Promise<void> {
    const doomed = this.list().filter((s) => !(options.keepPaused && s.state === "paused"));
    await Promise.allSettled(doomed.map((s) => this.kill(s.id, "killed", "node shutdown")));
    await Promise.all(this.deletions);
  }

  /**
   * Boots a new sandbox from its template's snapshot when there is one that fits, else cold. A
   * snapshot that fails to restore is dropped (cold starts until the template is prepared again).
   */
  private async bootNew(sandbox: Sandbox, build: TemplateBuild, lap: (phase: string) => void): Promise<void> {
    const { record } = sandbox;
    const snapshot = await this.snapshotOf(build);
    if (!snapshot || snapshot.memoryMB !== record.memoryMB) {
      await this.boot(sandbox, undefined, lap);
      return;
    }
    try {
      await this.boot(sandbox, snapshot.image, lap, (upper) => seedUpper(snapshot, upper));
      this.fault("snapshot:restored");
      record.startKind = "snapshot";
    } catch (err) {
      this.options.logger.warn(
        { err, sandboxID: record.sandboxID, templateID: record.templateID },
        "restoring the template snapshot failed; dropping it and starting cold",
      );
      this.snapshots.delete(build.key);
      await sandbox.runtime.run();
      resetRuntime(sandbox);
      await resetWritableLayer(sandbox);
      record.lifecycleID = newLifecycleID(record.sandboxID);
      await this.boot(sandbox, undefined, lap);
    }
  }

  /**
   * The build's snapshot: the one prepared, else one on disk made by an earlier run of this node
   * (a custom build's, made when it was built). A build whose snapshot is missing boots cold.
   */
  private async snapshotOf(build: TemplateBuild): Promise<TemplateSnapshot | undefined> {
    const known = this.snapshots.get(build.key);
    if (known || !this.options.snapshotKey || build.key === "base") return known;
    const found = await findSnapshot(
      build.templateID,
      snapshotDir(build.dir, this.options.snapshotKey),
      build,
    );
    if (found) this.snapshots.set(build.key, found);
    else if (!this.preparing.has(build.key)) {
      // Made by another runtime (moat was upgraded): make this runtime's in the background.
      this.preparing.add(build.key);
      this.prepareTemplate(build.templateID, { buildID: build.key, pool: false })
        .catch((err: unknown) =>
          this.options.logger.warn(
            { err, templateID: build.templateID },
            "re-making a build's snapshot failed",
          ),
        )
        .finally(() => this.preparing.delete(build.key));
    }
    return found;
  }

  /** A pool entry for this create, when one is ready and was booted the way it asks. */
  private claimPooled(input: CreateInput, build: TemplateBuild): Sandbox | undefined {
    const snapshot = this.snapshots.get(build.key);
    if (!snapshot || input.memoryMB !== snapshot.memoryMB || input.vcpu !== snapshot.vcpu) return undefined;
    if (!input.allowInternetAccess) return undefined;
    // Entries were made with the build's disk size.
    if (this.diskSizeOf(input.diskSizeMB, build) !== this.diskSizeOf(0, build)) return undefined;
    const entry = this.pools.get(build.key)?.shift();
    if (entry) this.fillPool(build.key, POOL_REFILL_DELAY_MS);
    return entry;
  }

  /**
   * Refills the template's warm pool in the background, one sandbox at a time, creates first,
   * after `delayMs` (a claim's refill waits a moment: see POOL_REFILL_DELAY_MS).
   */
  private fillPool(buildKey: string, delayMs = 0): void {
    const snapshot = this.snapshots.get(buildKey);
    if (!snapshot || this.options.poolSize <= 0 || this.closed || this.filling.has(buildKey)) return;
    const build = this.resolveBuildByKey(buildKey, snapshot.templateID);
    if (!build) return;
    this.filling.add(buildKey);
    const pool = this.pools.get(buildKey) ?? [];
    this.pools.set(buildKey, pool);
    void (async () => {
      try {
        if (delayMs > 0) await new Promise((r) => setTimeout(r, delayMs));
        while (!this.closed && pool.length < this.options.poolSize) {
          if (this.starting > 0) {
            await new Promise((r) => setTimeout(r, 50));
            continue;
          }
          const entry = await this.startPooled(build, snapshot);
          if (this.closed) await releaseAll(entry, entry.cleanup);
          else pool.push(entry);
        }
        this.options.logger.info({ templateID: build.templateID, ready: pool.length }, "warm pool full");
      } catch (err) {
        this.options.logger.warn(
          { err, templateID: build.templateID },
          "warm pool refill failed; retrying later",
        );
        setTimeout(() => this.fillPool(buildKey), POOL_RETRY_MS).unref();
      } finally {
        this.filling.delete(buildKey);
      }
    })();
  }

  /** Restores one pool entry from the snapshot; /init waits until a create claims it. */
  private async startPooled(build: TemplateBuild, snapshot: TemplateSnapshot): Promise<Sandbox> {
    const sandbox = await this.newInstance(
      { ...build, vcpu: snapshot.vcpu, memoryMB: snapshot.memoryMB },
      `pool-${randomBytes(5).toString("hex")}`,
      "pooled",
    );
    try {
      await this.boot(
        sandbox,
        snapshot.image,
        () => undefined,
        (upper) => seedUpper(snapshot, upper),
      );
      sandbox.record.startKind = "pool";
      return sandbox;
    } catch (err) {
      await releaseAll(sandbox, sandbox.cleanup).catch(() => undefined);
      throw err;
    }
  }

  /**
   * Boots a sandbox from the template build with envd ready, starts its start command and waits
   * for its ready command, then checkpoints it into `dir`.
   */
  private async buildSnapshot(
    build: TemplateBuild,
    dir: string,
    onOutput?: (line: OutputLine) => void,
  ): Promise<TemplateSnapshot> {
    const { options } = this;
    const templateID = build.templateID;
    const sandbox = await this.newInstance(build, `snapshot-${randomBytes(4).toString("hex")}`, "starting");
    const timer = phaseTimer();
    try {
      await this.boot(sandbox, undefined, timer.lap);
      const slot = sandbox.slot!;
      if (build.startCmd || build.readyCmd) {
        await this.startAndWaitReady(slot.hostAddress, build, onOutput);
        timer.lap("ready");
      }
      await warmEnvd(slot.hostAddress);
      timer.lap("warm");
      await freezeEnvd(slot.hostAddress, () => closeIngress(slot));
      const { image } = snapshotPaths(dir);
      await mkdir(dir, { recursive: true });
      // Released like a paused sandbox's: the container stopped with the checkpoint.
      sandbox.state = "pausing";
      await options.runsc.checkpoint(sandbox.record.lifecycleID, await prepareImage(image));
      this.fault("snapshot:checkpointed");
      await saveUpper(writableLayer(sandbox).upper, dir);
      await commitImage(image);
      timer.lap("checkpoint");
      options.logger.info({ templateID, dir, ...timer.done() }, "template snapshot built");
      return (await findSnapshot(templateID, dir, build))!;
    } finally {
      await releaseAll(sandbox, sandbox.cleanup).catch((err: unknown) =>
        options.logger.error({ err }, "releasing the snapshot sandbox"),
      );
      await Promise.all(this.deletions);
    }
  }

  /**
   * Runs the build's start command in the background (as its user, in its workdir, with its
   * environment) and its ready command every 2 s until it exits 0; output goes to `onOutput`.
   */
  private async startAndWaitReady(
    hostAddress: string,
    build: Pick<TemplateBuild, "startCmd" | "readyCmd" | "user" | "workdir" | "env"> & {
      accessToken?: string;
    },
    onOutput?: (line: OutputLine) => void,
    timing = { timeoutMs: READY_TIMEOUT_MS, intervalMs: READY_INTERVAL_MS },
  ): Promise<void> {
    const spec = {
      user: build.user || "user",
      cwd: build.workdir,
      envs: build.env,
      accessToken: build.accessToken,
    };
    const started = build.startCmd
      ? await startInSandbox(hostAddress, { ...spec, command: build.startCmd }, onOutput)
      : undefined;
    try {
      const readyCmd = build.readyCmd || DEFAULT_READY_CMD;
      const deadline = Date.now() + timing.timeoutMs;
      for (;;) {
        const exit = await runInSandbox(hostAddress, { ...spec, command: readyCmd }, onOutput);
        if (exit.exitCode === 0) return;
        if (started?.exited) {
          throw new Error(
            `the start command exited (code ${started.exited.exitCode}) before the ready command succeeded`,
          );
        }
        if (Date.now() > deadline) {
          throw new Error(`the ready command did not succeed within ${timing.timeoutMs / 1000} s`);
        }
        await new Promise((r) => setTimeout(r, timing.intervalMs));
      }
    } finally {
      // The process keeps running in the sandbox; only our stream of its output ends.
      started?.detach();
    }
  }

  /** A sandbox of the node's own (snapshot builder, pool entry, build step): not registered. */
  private async newInstance(
    build: Pick<TemplateBuild, "templateID" | "key" | "lowers" | "vcpu" | "memoryMB" | "diskSizeMB">,
    name: string,
    state: "starting" | "pooled",
  ): Promise<Sandbox> {
    const record: SandboxRecord = {
      sandboxID: name,
      templateID: build.templateID,
      buildKey: build.key,
      lowers: build.lowers,
      teamID: "",
      vcpu: build.vcpu,
      memoryMB: build.memoryMB,
      diskSizeMB: this.diskSizeOf(0, build),
      envVars: {},
      metadata: {},
      envdAccessToken: "",
      allowInternetAccess: true,
      defaultUser: "",
      defaultWorkdir: "",
      dir: name,
      endTime: new Date(8.64e15).toISOString(),
      startTime: new Date().toISOString(),
      slotIndex: 0,
      lifecycleID: newLifecycleID(name),
      state,
    };
    await writeRecord(this.options.dataDir, record);
    const dir = sandboxDir(this.options.dataDir, name);
    const cleanup = new CleanupStack();
    cleanup.push("sandbox directory", () => removeSandboxDir(dir));
    return new Sandbox(record, dir, cleanup);
  }

  /**
   * Gives a sandbox a running runtime: slot → network → rootfs mount → runsc run (or restore of
   * `image`) → envd answering. Every resource goes onto `sandbox.runtime` as it is taken.
   */
  private async boot(
    sandbox: Sandbox,
    image: string | undefined,
    lap: (phase: string) => void,
    seed?: (upper: string) => Promise<void>,
  ): Promise<void> {
    const { options } = this;
    const { record } = sandbox;
    const runtime = sandbox.runtime;
    const lowers = record.lowers ?? this.resolveBuild(record.templateID, record.buildID).lowers;
    const prepared = record.allowInternetAccess ? this.networks.take() : undefined;
    const slot = prepared ?? this.slots.acquire();
    runtime.push("slot", () => this.slots.release(slot));
    sandbox.slot = slot;
    record.slotIndex = slot.index;
    const sized = record.diskSizeMB > 0;
    // Neither needs the other: the network and the disk are made side by side.
    const [network, disk] = await Promise.allSettled([
      prepared
        ? undefined
        : createSandboxNetwork(slot, {
            allowInternetAccess: record.allowInternetAccess,
            maxConnections: options.maxConnectionsPerSandbox,
          }),
      sized ? mountDisk(sandbox.dir, record.diskSizeMB) : undefined,
    ]);
    if (network.status === "fulfilled") runtime.push("network", () => destroySandboxNetwork(slot));
    if (sized && disk.status === "fulfilled") runtime.push("disk mount", () => unmountDisk(sandbox.dir));
    for (const step of [network, disk]) if (step.status === "rejected") throw step.reason;
    lap(sized ? "networkDisk" : "network");
    if (seed) {
      await seed(writableLayer(sandbox).upper);
      lap("seed");
    }
    const rootfs = await mountRootfs(lowers, sandbox.dir, sized);
    runtime.push("rootfs mount", () => unmountOverlay(sandbox.dir));
    const bundle = await this.writeBundle(sandbox, rootfs.merged);
    lap("rootfs");
    const containerID = record.lifecycleID;
    runtime.push("runsc container", () => this.releaseContainer(sandbox, containerID));
    const logFile = path.join(sandbox.dir, "runsc.log");
    sandbox.runtimePID = image
      ? await options.runsc.restore(containerID, bundle, image, logFile)
      : await options.runsc.run(containerID, bundle, logFile);
    lap("runtime");
    await waitForEnvd(slot.hostAddress, options.envdReadyTimeoutMs);
    lap("envdReady");
  }

  /** POST /init: env vars, token, defaults and hostname; the same body again after a resume. */
  private async init(sandbox: Sandbox): Promise<void> {
    const r = sandbox.record;
    await initEnvd(sandbox.hostAddress, {
      envVars: { ...r.envVars, E2B_SANDBOX_ID: r.sandboxID, E2B_TEMPLATE_ID: r.templateID },
      accessToken: r.envdAccessToken || undefined,
      defaultUser: r.defaultUser || undefined,
      defaultWorkdir: r.defaultWorkdir || undefined,
      hostname: r.sandboxID,
    });
  }

  private async doPause(sandbox: Sandbox, memory: boolean, reason: string): Promise<void> {
    const { options } = this;
    const r = sandbox.record;
    const slot = sandbox.slot;
    const log = options.logger.child({ sandboxID: r.sandboxID });
    const timer = phaseTimer();
    const image = memoryImagePath(sandbox.dir);
    let saved = false;
    try {
      if (!slot) throw new Error("running sandbox without a network slot");
      r.state = "pausing";
      await writeRecord(options.dataDir, r);
      await freezeEnvd(slot.hostAddress, () => closeIngress(slot), r.envdAccessToken || undefined);
      timer.lap("freeze");
      this.fault("pause:frozen");
      if (memory) {
        await options.runsc.checkpoint(r.lifecycleID, await prepareImage(image));
        saved = true;
        timer.lap("checkpoint");
        this.fault("pause:checkpointed");
        await commitImage(image);
      }
      this.fault("pause:committed");
    } catch (err) {
      const state = await options.runsc.state(r.lifecycleID).catch(() => undefined);
      if (state?.status === "running" && slot) {
        // Nothing is lost: the sandbox goes on running as it was.
        await removeImage(image).catch(() => undefined);
        await openIngress(slot).catch((e: unknown) => log.error({ err: e }, "reopening ingress"));
        r.state = "running";
        await writeRecord(options.dataDir, r).catch(() => undefined);
        sandbox.state = "running";
        this.armEnd(sandbox);
        log.warn({ err }, "pause failed; the sandbox goes on running");
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
    await this.settlePaused(sandbox, memory && saved, log);
    timer.lap("release");
    log.info({ memory: r.memory, reason, ...timer.done() }, "sandbox paused");
    this.emit({ sandboxID: r.sandboxID, type: "paused", reason });
  }

  private async doResume(sandbox: Sandbox, endTime: Date, reboot: boolean): Promise<void> {
    const { options } = this;
    const previous = { ...sandbox.record };
    const r = sandbox.record;
    const log = options.logger.child({ sandboxID: r.sandboxID });
    const timer = phaseTimer();
    const image = memoryImagePath(sandbox.dir);
    const restore = !reboot && r.memory === true && (await imageExists(image));
    try {
      r.lifecycleID = newLifecycleID(r.sandboxID);
      await this.boot(sandbox, restore ? image : undefined, this.faultAfter("resume", timer.lap));
      this.fault("resume:restored");
      await this.init(sandbox);
      timer.lap("init");
      r.state = "running";
      r.endTime = endTime.toISOString();
      r.memory = undefined;
      r.startKind = restore ? "resume" : "cold";
      await writeRecord(options.dataDir, r);
    } catch (err) {
      await sandbox.runtime
        .run()
        .catch((releaseErr: unknown) => log.error({ err: releaseErr }, "release after failed resume"));
      resetRuntime(sandbox);
      sandbox.record = previous;
      sandbox.state = "paused";
      log.warn({ err }, "resume failed; the sandbox stays paused");
      throw new ResumeFailedError(r.sandboxID, errorMessage(err));
    }
    sandbox.state = "running";
    this.armEnd(sandbox);
    // The record says running: the image has served.
    await removeImage(image).catch((err: unknown) => log.error({ err }, "removing a used memory image"));
    log.info(
      { slot: r.slotIndex, hostAddress: sandbox.hostAddress, restored: restore, ...timer.done() },
      "sandbox resumed",
    );
    this.emit({ sandboxID: r.sandboxID, type: "resumed", reason: restore ? "memory" : "files" });
  }

  /** Releases the slot, network, mount and container of the current run (pause, failed resume). */
  /** Records the sandbox paused (with its memory image or only its files) and releases its runtime. */
  private async settlePaused(sandbox: Sandbox, memory: boolean, log: Logger): Promise<void> {
    sandbox.record.state = "paused";
    sandbox.record.memory = memory;
    await writeRecord(this.options.dataDir, sandbox.record);
    await this.releaseRuntime(sandbox, log);
    sandbox.state = "paused";
  }

  private async releaseRuntime(sandbox: Sandbox, log: Logger): Promise<void> {
    try {
      await sandbox.runtime.run();
    } catch (err) {
      // Named after the slot and container: the next start reaps whatever is left.
      log.error({ err }, "releasing a paused sandbox's runtime");
    }
    resetRuntime(sandbox);
  }

  /**
   * Deletes a run's container. A pause does not wait for it: the sandbox process has stopped (or
   * is killed here), but `runsc delete` waits until the host's init reaps it, which takes over a
   * second on some hosts; nothing of it is needed to resume (a new container gets a new id).
   */
  private releaseContainer(sandbox: Sandbox, containerID: string): Promise<void> {
    if (sandbox.state !== "pausing") return this.options.runsc.destroy(containerID);
    const pid = sandbox.runtimePID;
    if (pid !== undefined) {
      try {
        process.kill(pid, "SIGKILL");
      } catch {
        // Already gone.
      }
    }
    const deletion: Promise<void> = this.options.runsc
      .destroy(containerID)
      .catch((err: unknown) =>
        this.options.logger.error({ err, containerID }, "deleting a paused sandbox's container"),
      )
      .finally(() => this.deletions.delete(deletion));
    this.deletions.add(deletion);
    // A pause's sandbox has stopped with its checkpoint; a build sandbox was just killed.
    return pid !== undefined && sandbox.stopping === "build" ? waitForExit(pid, 2000) : Promise.resolve();
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
    const active = this.list().filter((s) => s.state !== "paused").length;
    if (active + this.starting >= options.maxSandboxes) {
      throw new NodeBusyError(`${options.maxSandboxes} sandboxes already on this node`);
    }
    if (this.starting >= options.maxStarting) {
      throw new NodeBusyError(`${options.maxStarting} sandboxes already starting`);
    }
  }

  /** A sandbox's disk size: what its create asks, else its template build's, else the node's. */
  private diskSizeOf(requested: number, build: Pick<TemplateBuild, "diskSizeMB">): number {
    return requested || build.diskSizeMB || this.options.diskSizeMB;
  }

  private resolveBuild(templateID: string, buildID?: string): TemplateBuild {
    const build = this.options.templates.resolve(templateID, buildID);
    if (!build) throw new TemplateNotFoundError(buildID ? `${templateID}/${buildID}` : templateID);
    return build;
  }

  private resolveBuildByKey(key: string, templateID: string): TemplateBuild | undefined {
    return this.options.templates.resolve(templateID, key === "base" ? undefined : key);
  }

  /** `lap`, then the fault `<operation>:<phase>` (MOAT_FAULTS) after each boot phase. */
  private faultAfter(operation: string, lap: (phase: string) => void): (phase: string) => void {
    return (phase) => {
      lap(phase);
      this.fault(`${operation}:${phase}`);
    };
  }

  /** Injects the fault MOAT_FAULTS names for `step`, if any (the template builder's too). */
  fault(step: string): void {
    const kind = this.options.faults?.get(step);
    if (!kind) return;
    this.options.logger.warn({ step, kind }, "injected fault");
    if (kind === "crash") process.kill(process.pid, "SIGKILL");
    throw new Error(`injected fault at ${step}`);
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
    sandbox.state = "pausing";
    sandbox.pauseInterrupted = false;
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

  private adopt(record: SandboxRecord, dir: string, runtimePID: number): void {
    const { options } = this;
    const slot = this.slots.claim(record.slotIndex);
    const sandbox = this.register(record, dir);
    const runtime = sandbox.runtime;
    runtime.push("slot", () => this.slots.release(slot));
    runtime.push("network", () => destroySandboxNetwork(slot));
    runtime.push("rootfs mount", () => unmountRootfs(dir));
    runtime.push("runsc container", () => options.runsc.destroy(record.lifecycleID));
    sandbox.slot = slot;
    sandbox.state = "running";
    sandbox.runtimePID = runtimePID;
    if (record.state !== "running") {
      record.state = "running";
      void writeRecord(options.dataDir, record).catch(() => undefined);
    }
    this.armEnd(sandbox);
  }

  private registerPaused(record: SandboxRecord, dir: string): void {
    this.register(record, dir).state = "paused";
  }

  private register(record: SandboxRecord, dir: string): Sandbox {
    const cleanup = new CleanupStack();
    cleanup.push("sandbox directory", () => removeSandboxDir(dir));
    cleanup.push("registry entry", () => this.sandboxes.delete(record.sandboxID));
    const sandbox = new Sandbox(record, dir, cleanup);
    sandbox.markStarted();
    this.sandboxes.set(record.sandboxID, sandbox);
    return sandbox;
  }

  private async writeBundle(sandbox: Sandbox, rootfs: string): Promise<string> {
    const { options } = this;
    const bundle = path.join(sandbox.dir, "bundle");
    await mkdir(bundle, { recursive: true });
    const spec = sandboxSpec({
      sandboxID: sandbox.id,
      containerID: sandbox.record.lifecycleID,
      rootfs,
      netnsPath: sandbox.slot!.guestNamespacePath,
      vcpu: sandbox.record.vcpu,
      memoryMB: sandbox.record.memoryMB,
      pidsLimit: options.pidsLimit,
      nodeBinary: options.nodeBinary,
      envdDir: options.envdDir,
      envdPort: ENVD_PORT,
      cpuShares: sandbox.record.state === "pooled" ? BACKGROUND_CPU_SHARES : undefined,
    });
    await writeFile(path.join(bundle, "config.json"), JSON.stringify(spec, null, 2));
    return bundle;
  }

  private emit(event: Omit<SandboxEvent, "time">): void {
    const full = { ...event, time: new Date() };
    for (const listener of this.listeners) listener(full);
  }
}

/** Where a sandbox's writable layer is (on its disk when it has a size). */
function writableLayer(sandbox: Sandbox): { upper: string; work: string } {
  return rootfsPaths(sandbox.dir, sandbox.record.diskSizeMB > 0);
}

/** Empties a sandbox's writable layer (its runtime released): the next boot starts afresh. */
async function resetWritableLayer(sandbox: Sandbox): Promise<void> {
  if (sandbox.record.diskSizeMB > 0) {
    await removeDisk(sandbox.dir);
    return;
  }
  const { upper, work } = writableLayer(sandbox);
  await Promise.all([upper, work].map((d) => rm(d, { recursive: true, force: true })));
}

/**
 * Moves a stopped sandbox's writable layer to `target` (a build step's new layer): copied off its
 * disk, owners, modes, xattrs and whiteouts as they are, or renamed when it has none.
 */
async function keepWritableLayer(sandbox: Sandbox, target: string): Promise<void> {
  if (!(sandbox.record.diskSizeMB > 0)) {
    await rename(writableLayer(sandbox).upper, target);
    return;
  }
  await mountDisk(sandbox.dir, sandbox.record.diskSizeMB);
  try {
    await runCommand(["cp", "-a", writableLayer(sandbox).upper, target], { timeoutMs: 60 * 60_000 });
  } finally {
    await unmountDisk(sandbox.dir);
  }
}

/** Releases a sandbox's current run, then what lives as long as the sandbox. */
async function releaseAll(sandbox: Sandbox | undefined, cleanup: CleanupStack): Promise<void> {
  try {
    await sandbox?.runtime.run();
  } finally {
    await cleanup.run();
  }
}

/** Whether a process exists and is not a zombie waiting to be reaped. */
async function processAlive(pid: number): Promise<boolean> {
  const stat = await readFile(`/proc/${pid}/stat`, "utf8").catch(() => "");
  const state = stat.slice(stat.lastIndexOf(")") + 2, stat.lastIndexOf(")") + 3);
  return state !== "" && state !== "Z" && state !== "X";
}

/** Resolves once `pid` has exited (a zombie counts), or after `timeoutMs`. */
async function waitForExit(pid: number, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline && (await processAlive(pid))) await new Promise((r) => setTimeout(r, 10));
}

function resetRuntime(sandbox: Sandbox): void {
  sandbox.runtime = new CleanupStack();
  sandbox.slot = undefined;
  sandbox.runtimePID = undefined;
}

function newLifecycleID(sandboxID: string): string {
  return `moat-${sandboxID}-${randomBytes(3).toString("hex")}`;
}

function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/** Per-phase durations of a create, pause, resume or kill, for the log line that ends it. */
function phaseTimer(): { lap: (phase: string) => void; done: () => Record<string, number> } {
  const started = performance.now();
  const timings: Record<string, number> = {};
  let mark = started;
  return {
    lap(phase) {
      const now = performance.now();
      timings[phase] = Math.round(now - mark);
      mark = now;
    },
    done: () => ({ totalMs: Math.round(performance.now() - started), ...timings }),
  };
}

function validate(input: CreateInput): void {
  if (!SANDBOX_ID.test(input.sandboxID)) {
    throw new InvalidSandboxConfigError(`sandbox id '${input.sandboxID}' must match ${SANDBOX_ID}`);
  }
  if (!Number.isInteger(input.vcpu) || input.vcpu < 1 || input.vcpu > 64) {
    throw new InvalidSandboxConfigError(`vcpu must be an integer from 1 to 64, got ${input.vcpu}`);
  }
  if (!Number.isInteger(input.memoryMB) || input.memoryMB < 64 || input.memoryMB > 256 * 1024) {
    throw new InvalidSandboxConfigError(`memory_mb must be from 64 to 262144, got ${input.memoryMB}`);
  }
  const disk = input.diskSizeMB;
  if (!Number.isInteger(disk) || (disk !== 0 && (disk < MIN_DISK_SIZE_MB || disk > MAX_DISK_SIZE_MB))) {
    throw new InvalidSandboxConfigError(
      `disk_size_mb must be 0 (the node's default) or from ${MIN_DISK_SIZE_MB} to ${MAX_DISK_SIZE_MB}, got ${disk}`,
    );
  }
  if (Number.isNaN(input.endTime.getTime())) throw new InvalidSandboxConfigError("end_time is invalid");
}
