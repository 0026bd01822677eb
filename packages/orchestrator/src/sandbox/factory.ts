/**
 * Gives a sandbox a running runtime and takes it back: slot and network (network/network-pool.ts)
 * → rootfs mount → runsc run, or restore of a memory image → envd answering → /init. Every
 * resource goes onto the sandbox's `runtime` cleanup stack as it is taken, so a failure at any
 * step releases exactly what was taken. The node's own sandboxes (pool entries, snapshot and build
 * sandboxes) are made here too. The manager uses it through `SandboxFactory`, which tests fake.
 */
import { randomBytes } from "node:crypto";
import { mkdir, rename, rm, writeFile } from "node:fs/promises";
import path from "node:path";
import { CleanupStack, ENVD_PORT, type Logger, runCommand } from "@moat/shared";
import { childrenOf, killOwnedProcess, processAlive, waitForExit } from "../host/process.js";
import type { EgressRegistry } from "../network/egress-rules.js";
import type { NetworkPool } from "../network/network-pool.js";
import { closeIngress, openIngress, refuseIngress } from "../network/sandbox-network.js";
import { BACKGROUND_CPU_SHARES } from "../runtime/cpu-priority.js";
import { sandboxSpec } from "../runtime/oci-spec.js";
import type { Runsc } from "../runtime/runsc.js";
import { prepareImage } from "../snapshot/image.js";
import { mountDisk, removeDisk, unmountDisk } from "../storage/disk.js";
import { copyWritableLayer } from "../storage/layer-copy.js";
import {
  mountRootfs,
  removeSandboxDir,
  rootfsPaths,
  unmountOverlay,
  unmountRootfs,
} from "../storage/overlay.js";
import type { VolumeStore } from "../storage/volumes.js";
import type { TemplateBuild, TemplateResolver } from "../template/store.js";
import { diskSizeOf, resolveBuild } from "./create-input.js";
import { freezeEnvd, initEnvd, waitForEnvd, warmFirstProcess } from "./envd-client.js";
import { type OutputLine, runInSandbox, startInSandbox } from "./envd-process.js";
import { type SandboxRecord, sandboxDir, writeRecord } from "./record.js";
import { Sandbox } from "./sandbox.js";
import type { SandboxKind } from "./state.js";

/** The build settings a node's own sandbox is made from. */
export type InstanceBuild = Pick<
  TemplateBuild,
  "templateID" | "key" | "lowers" | "vcpu" | "memoryMB" | "diskSizeMB"
>;

export interface BootOptions {
  /** A memory image to restore instead of booting afresh. */
  image?: string;
  /** Called after each boot phase (network, rootfs, runtime, envdReady) with its name. */
  lap?: (phase: string) => void;
  /** Fills the empty writable layer before the mount (a template snapshot's files). */
  seed?: (upper: string) => Promise<void>;
  /**
   * Runs one process through envd once it answers (warmFirstProcess): for warm-pool entries, so
   * that what a restored sandbox's first process costs is paid before a create claims it.
   */
  warm?: boolean;
}

/** The runtime operations the lifecycle needs; `RunscSandboxFactory` is the real one. */
export interface SandboxFactory {
  /** A node's own sandbox, not registered anywhere: its record written, no runtime yet. */
  instance(build: InstanceBuild, kind: Exclude<SandboxKind, "user">): Promise<Sandbox>;
  boot(sandbox: Sandbox, options?: BootOptions): Promise<void>;
  /**
   * POST /init: env vars, token, defaults and hostname; the same body again after a resume.
   * `presentToken`: the token the restored envd holds (a sandbox started from a snapshot).
   */
  init(sandbox: Sandbox, presentToken?: string): Promise<void>;
  /** envd syncs the files and drops its connections; new connections are held off. */
  freeze(sandbox: Sandbox): Promise<void>;
  /** Lets traffic in again (a pause that failed with the runtime alive). */
  reopen(sandbox: Sandbox): Promise<void>;
  /** Refuses new traffic at once (a sandbox going away). */
  refuse(sandbox: Sandbox): Promise<void>;
  /**
   * Stops everything running in the sandbox at once (a kill): once this returns nothing of it
   * runs and nothing answers at its address. What it holds stays for `release`. Throws when it
   * cannot say so; a kill then releases it all before answering.
   */
  stop(sandbox: Sandbox): Promise<void>;
  /** Applies the record's egress rules to its running network now (network/egress-rules.ts). */
  applyEgress(sandbox: Sandbox): Promise<void>;
  /** Saves memory and processes into `image` (uncommitted); the container stops. */
  checkpoint(sandbox: Sandbox, image: string): Promise<void>;
  /**
   * Saves a running sandbox's memory into `image` (uncommitted) and a copy of its writable layer
   * into `files` taken at the same moment, and lets it carry on: its TCP connections are reset
   * (gVisor cannot save them), everything else goes on where it was. `whileStopped` runs once
   * both are saved, before the sandbox carries on (failure injection).
   */
  snapshotInPlace(
    sandbox: Sandbox,
    target: { image: string; files: string },
    whileStopped?: () => void,
  ): Promise<void>;
  /** Whether runsc says the sandbox's current container runs. */
  isRunning(sandbox: Sandbox): Promise<boolean>;
  /** The runtime of a sandbox found running after a restart, put on its runtime stack. */
  adoptRuntime(sandbox: Sandbox, runtimePID: number): void;
  /** Releases the current run (slot, network, mount, container): a pause, a failed resume. */
  releaseRuntime(sandbox: Sandbox): Promise<void>;
  /** Releases the current run, then what lives as long as the sandbox: a kill. */
  release(sandbox: Sandbox): Promise<void>;
  /** Releases the run and empties the writable layer: the next boot starts afresh. */
  reset(sandbox: Sandbox): Promise<void>;
  /** Runs the build's start command and waits for its ready command (see RunscSandboxFactory). */
  startAndWaitReady(
    sandbox: Sandbox,
    build: ReadyCommands,
    onOutput?: (line: OutputLine) => void,
    timing?: { timeoutMs: number; intervalMs: number },
  ): Promise<void>;
  /** A template build step's sandbox, booted cold on `lowers` (see RunscSandboxFactory). */
  startBuildSandbox(
    templateID: string,
    lowers: string[],
    size: { vcpu: number; memoryMB: number; diskSizeMB?: number },
    prepareUpper?: (upper: string) => Promise<void>,
  ): Promise<Sandbox>;
  /** Stops a build step's sandbox, keeping its writable layer at `keepUpper` when given. */
  stopBuildSandbox(sandbox: Sandbox, keepUpper?: string): Promise<void>;
  /** Removes a sandbox's directory and whatever is still mounted in it. */
  removeDirectory(dir: string): Promise<void>;
  /** Container deletions still running in the background are done. */
  settled(): Promise<void>;
}

export type ReadyCommands = Pick<TemplateBuild, "startCmd" | "readyCmd" | "user" | "workdir" | "env"> & {
  accessToken?: string;
};

export interface RunscSandboxFactoryOptions {
  dataDir: string;
  runsc: Runsc;
  networks: NetworkPool;
  /** Every running sandbox's egress rules, by slot (what the node's resolver asks). */
  egress: EgressRegistry;
  templates: TemplateResolver;
  /** The node binary and envd's directory (ENVD_DIR) mounted into sandboxes. */
  nodeBinary: string;
  envdDir: string;
  pidsLimit: number;
  envdReadyTimeoutMs: number;
  /** Disk size of sandboxes whose create and template name none, in MiB; 0: no limit. */
  diskSizeMB: number;
  /** The node's volumes, which sandboxes with volume mounts mount. */
  volumes?: VolumeStore;
  logger: Logger;
}

/** How long a template's ready command may take to succeed before the snapshot (as E2B). */
export const READY_TIMEOUT_MS = 10 * 60_000;
const READY_INTERVAL_MS = 2000;
/** How long a killed sandbox's runsc process may take to exit (it frees its memory first). */
const STOP_TIMEOUT_MS = 5000;
/** E2B's ready command when a template has a start command and names none. */
const DEFAULT_READY_CMD = "sleep 20";

export class RunscSandboxFactory implements SandboxFactory {
  /** Container deletions left running in the background (after a checkpoint or a build step). */
  private readonly deletions = new Set<Promise<void>>();

  constructor(private readonly options: RunscSandboxFactoryOptions) {}

  async instance(build: InstanceBuild, kind: Exclude<SandboxKind, "user">): Promise<Sandbox> {
    const name = `${kind}-${randomBytes(5).toString("hex")}`;
    const record: SandboxRecord = {
      sandboxID: name,
      templateID: build.templateID,
      buildKey: build.key,
      lowers: build.lowers,
      teamID: "",
      vcpu: build.vcpu,
      memoryMB: build.memoryMB,
      diskSizeMB: diskSizeOf(0, build, this.options.diskSizeMB),
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
      // A pool entry's record says so from the start: a crash releases it, never adopts it.
      state: kind === "pool" ? "pooled" : "starting",
      kind,
    };
    await writeRecord(this.options.dataDir, record);
    const dir = sandboxDir(this.options.dataDir, name);
    const cleanup = new CleanupStack();
    cleanup.push("sandbox directory", () => removeSandboxDir(dir));
    return new Sandbox(record, dir, cleanup, kind === "pool" ? "pooled" : "starting");
  }

  async boot(sandbox: Sandbox, boot: BootOptions = {}): Promise<void> {
    const { options } = this;
    const { record } = sandbox;
    const lap = boot.lap ?? (() => undefined);
    const runtime = sandbox.runtime;
    const lowers =
      record.lowers ?? resolveBuild(this.options.templates, record.templateID, record.buildID).lowers;
    const sized = record.diskSizeMB > 0;
    // The network (with its egress rules) and the root filesystem (the disk, the seeded upper
    // layer, the overlay) need nothing of each other: they are made side by side. Each track puts
    // what it acquired on the runtime stack as it goes, so a failure of either releases both.
    const networkTrack = async () => {
      const lease = await options.networks.acquire({ allowInternetAccess: record.allowInternetAccess });
      runtime.push("network", () => lease.release());
      sandbox.slot = lease.slot;
      record.slotIndex = lease.slot.index;
      // Before anything of the sandbox runs: its rules hold from its first packet.
      const slot = lease.slot;
      runtime.push("egress rules", () => options.egress.detach(slot));
      await options.egress.attach(slot, sandbox.id, record, {
        allowInternetAccess: record.allowInternetAccess,
      });
    };
    const rootfsTrack = async () => {
      if (sized) {
        await mountDisk(sandbox.dir, record.diskSizeMB);
        runtime.push("disk mount", () => unmountDisk(sandbox.dir));
      }
      await boot.seed?.(writableLayer(sandbox).upper);
      const mounted = await mountRootfs(lowers, sandbox.dir, sized);
      runtime.push("rootfs mount", () => unmountOverlay(sandbox.dir));
      return mounted;
    };
    const [network, mounted] = await Promise.allSettled([networkTrack(), rootfsTrack()]);
    if (network.status === "rejected") throw network.reason;
    if (mounted.status === "rejected") throw mounted.reason;
    const rootfs = mounted.value;
    const bundle = await this.writeBundle(sandbox, rootfs.merged);
    lap("rootfs");
    const containerID = record.lifecycleID;
    runtime.push("runsc container", () => this.releaseContainer(sandbox, containerID));
    const logFile = path.join(sandbox.dir, "runsc.log");
    sandbox.runtimePID = boot.image
      ? await options.runsc.restore(containerID, bundle, boot.image, logFile)
      : await options.runsc.run(containerID, bundle, logFile);
    lap("runtime");
    await waitForEnvd(sandbox.hostAddress, options.envdReadyTimeoutMs);
    lap("envdReady");
    if (boot.warm) await warmFirstProcess(sandbox.hostAddress);
  }

  async init(sandbox: Sandbox, presentToken?: string): Promise<void> {
    const r = sandbox.record;
    await initEnvd(
      sandbox.hostAddress,
      {
        envVars: { ...r.envVars, E2B_SANDBOX_ID: r.sandboxID, E2B_TEMPLATE_ID: r.templateID },
        accessToken: r.envdAccessToken || undefined,
        defaultUser: r.defaultUser || undefined,
        defaultWorkdir: r.defaultWorkdir || undefined,
        hostname: r.sandboxID,
      },
      presentToken,
    );
  }

  async freeze(sandbox: Sandbox): Promise<void> {
    const slot = sandbox.slot;
    if (!slot) throw new Error("running sandbox without a network slot");
    await freezeEnvd(
      slot.hostAddress,
      () => closeIngress(slot),
      sandbox.record.envdAccessToken || undefined,
      () => openIngress(slot),
    );
  }

  async reopen(sandbox: Sandbox): Promise<void> {
    if (sandbox.slot) await openIngress(sandbox.slot);
  }

  async refuse(sandbox: Sandbox): Promise<void> {
    if (sandbox.slot) await refuseIngress(sandbox.slot);
  }

  /**
   * SIGKILLs the runsc sandbox process: gVisor's kernel, which every process of the sandbox runs
   * in and which holds its network stack. Its gofer and the processes it runs die with it. Waits
   * until it has exited, not until the host reaped it: that is what makes `runsc delete` slow
   * (over a second on some hosts), and the delete, unmounts and network go after the answer.
   */
  async stop(sandbox: Sandbox): Promise<void> {
    const pid = sandbox.runtimePID;
    // Paused (or between runs): nothing of it runs.
    if (sandbox.runtime.size === 0) return;
    if (pid === undefined) throw new Error("the sandbox's runtime process is not known");
    // Its children run the sandbox's processes (systrap stubs); they die with it, a moment later.
    const children = await childrenOf(pid);
    const killed = await killOwnedProcess(pid, sandbox.record.lifecycleID);
    // A pid the host gave to another process since: nothing to wait for, the full release runs.
    if (!killed && (await processAlive(pid)))
      throw new Error(`process ${pid} is no longer the sandbox's runtime`);
    await Promise.all([pid, ...children].map((p) => waitForExit(p, STOP_TIMEOUT_MS, 2)));
    if (await processAlive(pid)) throw new Error(`the sandbox process ${pid} outlived SIGKILL`);
  }

  async applyEgress(sandbox: Sandbox): Promise<void> {
    if (sandbox.slot) await this.options.egress.attach(sandbox.slot, sandbox.id, sandbox.record);
  }

  async checkpoint(sandbox: Sandbox, image: string): Promise<void> {
    await this.options.runsc.checkpoint(sandbox.record.lifecycleID, await prepareImage(image));
  }

  /**
   * As a pause begins: new connections are held off (dropped SYNs, retried by clients) and envd
   * syncs the files and resets its connections (one gVisor drops during the save leaves the
   * restored network stack unusable). Then every task stops (runsc pause), gVisor saves the
   * sandbox and leaves it paused, the disk is frozen and copied, and it all carries on. Whatever
   * fails, the sandbox is resumed and let in again before this returns.
   */
  async snapshotInPlace(
    sandbox: Sandbox,
    target: { image: string; files: string },
    whileStopped?: () => void,
  ): Promise<void> {
    const { runsc } = this.options;
    const slot = sandbox.slot;
    if (!slot) throw new Error("running sandbox without a network slot");
    const containerID = sandbox.record.lifecycleID;
    try {
      await this.freeze(sandbox);
      await runsc.pause(containerID);
      try {
        await runsc.checkpoint(containerID, await prepareImage(target.image), { leaveRunning: true });
        await copyWritableLayer(sandbox.dir, sandbox.record.diskSizeMB > 0, target.files);
        whileStopped?.();
      } finally {
        await runsc.resume(containerID);
      }
    } finally {
      await openIngress(slot);
    }
  }

  async isRunning(sandbox: Sandbox): Promise<boolean> {
    const state = await this.options.runsc.state(sandbox.record.lifecycleID).catch(() => undefined);
    return state?.status === "running";
  }

  adoptRuntime(sandbox: Sandbox, runtimePID: number): void {
    const { options } = this;
    const { record, dir, runtime } = sandbox;
    const lease = options.networks.adopt(record.slotIndex);
    runtime.push("network", () => lease.release());
    runtime.push("egress rules", () => options.egress.detach(lease.slot));
    runtime.push("rootfs mount", () => unmountRootfs(dir));
    runtime.push("runsc container", () => options.runsc.destroy(record.lifecycleID));
    sandbox.slot = lease.slot;
    sandbox.runtimePID = runtimePID;
    // Its table is still in its namespace; applied again so that the rules and the resolver agree.
    options.egress
      .attach(lease.slot, sandbox.id, record)
      .catch((err: unknown) =>
        options.logger.error({ err, sandboxID: sandbox.id }, "re-applying an adopted sandbox's egress rules"),
      );
  }

  async releaseRuntime(sandbox: Sandbox): Promise<void> {
    try {
      await sandbox.runtime.run();
    } finally {
      resetRuntime(sandbox);
    }
  }

  async release(sandbox: Sandbox): Promise<void> {
    try {
      await sandbox.runtime.run();
    } finally {
      await sandbox.cleanup.run();
    }
  }

  async reset(sandbox: Sandbox): Promise<void> {
    await this.releaseRuntime(sandbox);
    await resetWritableLayer(sandbox);
    sandbox.record.lifecycleID = newLifecycleID(sandbox.record.sandboxID);
  }

  /**
   * Runs the build's start command in the background (as its user, in its workdir, with its
   * environment) and its ready command every 2 s until it exits 0; output goes to `onOutput`.
   */
  async startAndWaitReady(
    sandbox: Sandbox,
    build: ReadyCommands,
    onOutput?: (line: OutputLine) => void,
    timing = { timeoutMs: READY_TIMEOUT_MS, intervalMs: READY_INTERVAL_MS },
  ): Promise<void> {
    const hostAddress = sandbox.hostAddress;
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

  /**
   * A build step's sandbox: booted cold on `lowers` with an empty writable layer (or one
   * `prepareUpper` fills), not registered, released like any sandbox after a crash.
   */
  async startBuildSandbox(
    templateID: string,
    lowers: string[],
    size: { vcpu: number; memoryMB: number; diskSizeMB?: number },
    prepareUpper?: (upper: string) => Promise<void>,
  ): Promise<Sandbox> {
    const sandbox = await this.instance({ templateID, key: `build-${templateID}`, lowers, ...size }, "build");
    try {
      await this.boot(sandbox, { seed: prepareUpper });
      return sandbox;
    } catch (err) {
      await this.release(sandbox).catch(() => undefined);
      throw err;
    }
  }

  /**
   * Stops a build sandbox; with `keepUpper`, its writable layer (what the step changed) is moved
   * there first. Everything else it held is released.
   */
  async stopBuildSandbox(sandbox: Sandbox, keepUpper?: string): Promise<void> {
    try {
      await this.releaseRuntime(sandbox);
      if (keepUpper) await keepWritableLayer(sandbox, keepUpper);
    } finally {
      await this.release(sandbox);
    }
  }

  removeDirectory(dir: string): Promise<void> {
    return removeSandboxDir(dir);
  }

  settled(): Promise<void> {
    return Promise.all(this.deletions).then(() => undefined);
  }

  /**
   * Deletes a run's container. A paused sandbox's and the node's own are deleted in the background
   * (their process is killed here, or stopped with its checkpoint): `runsc delete` waits until the
   * host's init reaps the sandbox process, which takes over a second on some hosts, and nothing of
   * it is needed after (a new run gets a new id). A kill waits for it: the sandbox must be gone
   * when the kill returns.
   */
  private releaseContainer(sandbox: Sandbox, containerID: string): Promise<void> {
    const background = sandbox.backgroundDelete || sandbox.kind === "build" || sandbox.kind === "snapshot";
    if (!background) return this.options.runsc.destroy(containerID);
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
        this.options.logger.error({ err, containerID }, "deleting a stopped container"),
      )
      .finally(() => this.deletions.delete(deletion));
    this.deletions.add(deletion);
    // A build step's layer is unmounted and kept next: its processes must be gone first.
    return pid !== undefined && sandbox.kind === "build" ? waitForExit(pid, 2000) : Promise.resolve();
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
      // Pool entries restore at a low CPU share; a claim raises it (runtime/cpu-priority.ts).
      cpuShares: sandbox.kind === "pool" ? BACKGROUND_CPU_SHARES : undefined,
      volumeMounts: await volumeSources(options.volumes, sandbox.record),
    });
    await writeFile(path.join(bundle, "config.json"), JSON.stringify(spec, null, 2));
    return bundle;
  }
}

/** Each volume mount's host directory (mounted on the node now if it was not) and its path inside. */
async function volumeSources(
  volumes: VolumeStore | undefined,
  record: SandboxRecord,
): Promise<Array<{ source: string; destination: string }>> {
  const mounts = record.volumeMounts ?? [];
  if (mounts.length > 0 && !volumes) throw new Error("this node has no volume store");
  const out: Array<{ source: string; destination: string }> = [];
  for (const m of mounts) {
    const source = await volumes!.mountPoint({ teamID: record.teamID, volumeID: m.volumeID });
    out.push({ source, destination: m.path });
  }
  return out;
}

/** A fresh runsc container id: each run of a sandbox gets its own. */
export function newLifecycleID(sandboxID: string): string {
  return `moat-${sandboxID}-${randomBytes(3).toString("hex")}`;
}

/** Forgets the current run (its stack already ran): no slot, pid or container. */
export function resetRuntime(sandbox: Sandbox): void {
  sandbox.runtime = new CleanupStack();
  sandbox.slot = undefined;
  sandbox.runtimePID = undefined;
  sandbox.backgroundDelete = false;
}

/** Where a sandbox's writable layer is (on its disk when it has a size). */
export function writableLayer(sandbox: Sandbox): { upper: string; work: string } {
  return rootfsPaths(sandbox.dir, sandbox.record.diskSizeMB > 0);
}

/** Empties a sandbox's writable layer (its runtime released). */
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
