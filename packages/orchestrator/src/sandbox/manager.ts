/**
 * The sandboxes of this node: create (slot → network → rootfs → runsc → envd ready → /init), kill,
 * end times, lifecycle events, and reclaim after a restart. Every resource a create acquires is
 * pushed onto the sandbox's cleanup stack right away, so a failure at any step releases exactly
 * what was taken.
 */
import { randomBytes } from "node:crypto";
import { mkdir, readFile, writeFile } from "node:fs/promises";
import path from "node:path";
import { CleanupStack, ENVD_PORT, type Logger } from "@moat/shared";
import { deleteLink, deleteNamespace, listLinks, listNamespaces } from "../network/netns.js";
import { createSandboxNetwork, destroySandboxNetwork } from "../network/sandbox-network.js";
import { Slot, slotIndexOf } from "../network/slot.js";
import { SlotPool } from "../network/slot-pool.js";
import { sandboxSpec } from "../runtime/oci-spec.js";
import type { Runsc } from "../runtime/runsc.js";
import { mountRootfs, mountsUnder, removeSandboxDir, unmountRootfs } from "../storage/overlay.js";
import { initEnvd, waitForEnvd } from "./envd-client.js";
import {
  InvalidSandboxConfigError,
  NodeBusyError,
  SandboxExistsError,
  SandboxNotFoundError,
  TemplateNotFoundError,
} from "./errors.js";
import { readRecords, type SandboxRecord, sandboxDir, writeRecord } from "./record.js";
import { Sandbox } from "./sandbox.js";

export interface TemplateResolver {
  /** Host path of a template's root filesystem, or undefined when the node does not have it. */
  rootfs(templateID: string): string | undefined;
}

export interface SandboxManagerOptions {
  dataDir: string;
  runsc: Runsc;
  templates: TemplateResolver;
  /** The node binary and moat checkout mounted into sandboxes for envd. */
  nodeBinary: string;
  appDir: string;
  logger: Logger;
  maxSandboxes: number;
  /** Creates in flight at once; more are refused with NodeBusyError rather than queued forever. */
  maxStarting: number;
  pidsLimit: number;
  envdReadyTimeoutMs: number;
}

export interface CreateInput {
  sandboxID: string;
  templateID: string;
  teamID: string;
  vcpu: number;
  memoryMB: number;
  diskSizeMB: number;
  envVars: Record<string, string>;
  metadata: Record<string, string>;
  envdAccessToken: string;
  allowInternetAccess: boolean;
  defaultUser: string;
  defaultWorkdir: string;
  endTime: Date;
}

export type SandboxEventType = "created" | "killed" | "expired" | "failed";
export interface SandboxEvent {
  sandboxID: string;
  type: SandboxEventType;
  time: Date;
  reason: string;
}

const SANDBOX_ID = /^[a-z0-9]{1,63}$/;
/** How often running sandboxes are checked for a runtime that died (out of memory, crash). */
const WATCHDOG_INTERVAL_MS = 1000;

export class SandboxManager {
  private readonly sandboxes = new Map<string, Sandbox>();
  private readonly slots = new SlotPool();
  private readonly listeners = new Set<(event: SandboxEvent) => void>();
  private starting = 0;
  private readonly watchdog: NodeJS.Timeout;

  constructor(private readonly options: SandboxManagerOptions) {
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

  /** Calls `listener` with every lifecycle event from now on; returns the unsubscribe function. */
  subscribe(listener: (event: SandboxEvent) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  async create(input: CreateInput): Promise<Sandbox> {
    validate(input);
    const { options } = this;
    if (this.sandboxes.has(input.sandboxID)) throw new SandboxExistsError(input.sandboxID);
    const templateRootfs = options.templates.rootfs(input.templateID);
    if (!templateRootfs) throw new TemplateNotFoundError(input.templateID);
    if (this.sandboxes.size + this.starting >= options.maxSandboxes) {
      throw new NodeBusyError(`${options.maxSandboxes} sandboxes already on this node`);
    }
    if (this.starting >= options.maxStarting) {
      throw new NodeBusyError(`${options.maxStarting} sandboxes already starting`);
    }

    const log = options.logger.child({ sandboxID: input.sandboxID });
    const started = performance.now();
    const timings: Record<string, number> = {};
    let mark = started;
    const lap = (phase: string) => {
      const now = performance.now();
      timings[phase] = Math.round(now - mark);
      mark = now;
    };
    const cleanup = new CleanupStack();
    let created: Sandbox | undefined;
    this.starting++;
    try {
      const slot = this.slots.acquire();
      cleanup.push("slot", () => this.slots.release(slot));
      const dir = sandboxDir(options.dataDir, input.sandboxID);
      const record: SandboxRecord = {
        ...input,
        endTime: input.endTime.toISOString(),
        startTime: new Date().toISOString(),
        slotIndex: slot.index,
        lifecycleID: `moat-${input.sandboxID}-${randomBytes(3).toString("hex")}`,
        state: "starting",
      };
      // The record goes to disk first: after a crash at any later step, reclaim finds it and
      // releases the slot's network, the mount and the container by their derived names.
      await writeRecord(options.dataDir, record);
      cleanup.push("sandbox directory", () => removeSandboxDir(dir));
      const sandbox = new Sandbox(record, slot, dir, cleanup);
      created = sandbox;
      this.sandboxes.set(input.sandboxID, sandbox);
      cleanup.push("registry entry", () => this.sandboxes.delete(input.sandboxID));

      lap("record");
      await createSandboxNetwork(slot, { allowInternetAccess: input.allowInternetAccess });
      cleanup.push("network", () => destroySandboxNetwork(slot));
      lap("network");
      const rootfs = await mountRootfs(templateRootfs, dir);
      cleanup.push("rootfs mount", () => unmountRootfs(dir));
      await addHostsEntry(rootfs.merged, input.sandboxID);
      const bundle = await this.writeBundle(sandbox, rootfs.merged);
      lap("rootfs");
      await options.runsc.run(record.lifecycleID, bundle, path.join(dir, "runsc.log"));
      cleanup.push("runsc container", () => options.runsc.destroy(record.lifecycleID));
      sandbox.runtimePID = (await options.runsc.state(record.lifecycleID))?.pid;
      lap("runtime");

      await waitForEnvd(slot.hostAddress, options.envdReadyTimeoutMs);
      lap("envdReady");
      await initEnvd(slot.hostAddress, {
        envVars: {
          ...input.envVars,
          E2B_SANDBOX_ID: input.sandboxID,
          E2B_TEMPLATE_ID: input.templateID,
        },
        accessToken: input.envdAccessToken || undefined,
        defaultUser: input.defaultUser || undefined,
        defaultWorkdir: input.defaultWorkdir || undefined,
      });
      lap("init");
      record.state = "running";
      await writeRecord(options.dataDir, record);
      sandbox.state = "running";
      sandbox.scheduleEnd(() => void this.kill(input.sandboxID, "expired", "end time reached"));
      log.info(
        {
          slot: slot.index,
          hostAddress: slot.hostAddress,
          totalMs: Math.round(performance.now() - started),
          ...timings,
        },
        "sandbox created",
      );
      this.emit({ sandboxID: input.sandboxID, type: "created", reason: "" });
      return sandbox;
    } catch (err) {
      log.warn({ err }, "sandbox create failed; releasing what it acquired");
      await cleanup
        .run()
        .catch((releaseErr: unknown) => log.error({ err: releaseErr }, "release after failed create"));
      this.emit({
        sandboxID: input.sandboxID,
        type: "failed",
        reason: err instanceof Error ? err.message : String(err),
      });
      throw err;
    } finally {
      this.starting--;
      created?.markStarted();
    }
  }

  /** Kills a sandbox and releases everything it holds. */
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
    if (sandbox.state === "stopping") {
      await sandbox.cleanup.run();
      return;
    }
    sandbox.state = "stopping";
    sandbox.clearEnd();
    try {
      await sandbox.cleanup.run();
    } finally {
      this.sandboxes.delete(sandboxID);
      this.options.logger.info({ sandboxID, type, reason }, "sandbox stopped");
      this.emit({ sandboxID, type, reason });
    }
  }

  updateEndTime(sandboxID: string, endTime: Date): void {
    const sandbox = this.get(sandboxID);
    sandbox.record.endTime = endTime.toISOString();
    sandbox.scheduleEnd(() => void this.kill(sandboxID, "expired", "end time reached"));
    void writeRecord(this.options.dataDir, sandbox.record).catch((err: unknown) =>
      this.options.logger.error({ err, sandboxID }, "could not persist end time"),
    );
  }

  /**
   * Startup reconcile: adopt the sandboxes whose container, network and mount survived, release
   * everything of the rest, and reap what no record owns (containers, namespaces, links, mounts).
   */
  async reclaim(): Promise<{ adopted: string[]; released: string[]; reaped: string[] }> {
    const { options } = this;
    const adopted: string[] = [];
    const released: string[] = [];
    const reaped: string[] = [];
    const containers = new Map((await options.runsc.list()).map((c) => [c.id, c]));
    const namespaces = new Set(await listNamespaces());
    const keptContainers = new Set<string>();
    const keptSlots = new Set<number>();

    for (const { sandboxID, record } of await readRecords(options.dataDir)) {
      const dir = sandboxDir(options.dataDir, sandboxID);
      const container = record ? containers.get(record.lifecycleID) : undefined;
      const slot = record ? new Slot(record.slotIndex) : undefined;
      const alive =
        record?.state === "running" &&
        container?.status === "running" &&
        slot !== undefined &&
        namespaces.has(slot.outerNamespace) &&
        namespaces.has(slot.guestNamespace);
      if (alive && record && slot) {
        this.adopt(record, dir, container.pid);
        keptContainers.add(record.lifecycleID);
        keptSlots.add(slot.index);
        adopted.push(sandboxID);
        continue;
      }
      if (record) await options.runsc.destroy(record.lifecycleID).catch(() => undefined);
      if (slot) await destroySandboxNetwork(slot).catch(() => undefined);
      await removeSandboxDir(dir);
      released.push(sandboxID);
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
    const keptMounts = new Set(this.list().map((s) => path.join(s.dir, "rootfs")));
    for (const mountPoint of await mountsUnder(path.join(options.dataDir, "sandboxes"))) {
      if (keptMounts.has(mountPoint)) continue;
      await unmountRootfs(path.dirname(mountPoint));
      reaped.push(`mount ${mountPoint}`);
    }
    options.logger.info({ adopted, released, reaped }, "reclaim finished");
    return { adopted, released, reaped };
  }

  /**
   * A sandbox whose runtime process is gone (the host killed it at its memory limit, or it
   * crashed) is released like a kill, with a `failed` event.
   */
  private reapDead(): void {
    for (const sandbox of this.sandboxes.values()) {
      if (sandbox.state !== "running" || sandbox.runtimePID === undefined) continue;
      try {
        process.kill(sandbox.runtimePID, 0);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== "ESRCH") continue;
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

  /** Stops the end timers; sandboxes keep running for the next orchestrator to adopt. */
  close(): void {
    clearInterval(this.watchdog);
    for (const sandbox of this.sandboxes.values()) sandbox.clearEnd();
    this.listeners.clear();
  }

  /** Kills every sandbox (node shutdown for good, and tests). */
  async killAll(): Promise<void> {
    await Promise.allSettled(this.list().map((s) => this.kill(s.id, "killed", "node shutdown")));
  }

  private adopt(record: SandboxRecord, dir: string, runtimePID: number): void {
    const { options } = this;
    const slot = this.slots.claim(record.slotIndex);
    const cleanup = new CleanupStack();
    cleanup.push("slot", () => this.slots.release(slot));
    cleanup.push("sandbox directory", () => removeSandboxDir(dir));
    cleanup.push("network", () => destroySandboxNetwork(slot));
    cleanup.push("rootfs mount", () => unmountRootfs(dir));
    cleanup.push("runsc container", () => options.runsc.destroy(record.lifecycleID));
    const sandbox = new Sandbox(record, slot, dir, cleanup);
    sandbox.state = "running";
    sandbox.runtimePID = runtimePID;
    sandbox.markStarted();
    this.sandboxes.set(record.sandboxID, sandbox);
    sandbox.scheduleEnd(() => void this.kill(record.sandboxID, "expired", "end time reached"));
  }

  private async writeBundle(sandbox: Sandbox, rootfs: string): Promise<string> {
    const { options } = this;
    const bundle = path.join(sandbox.dir, "bundle");
    await mkdir(bundle, { recursive: true });
    const spec = sandboxSpec({
      sandboxID: sandbox.id,
      rootfs,
      netnsPath: sandbox.slot.guestNamespacePath,
      vcpu: sandbox.record.vcpu,
      memoryMB: sandbox.record.memoryMB,
      pidsLimit: options.pidsLimit,
      nodeBinary: options.nodeBinary,
      appDir: options.appDir,
      envdPort: ENVD_PORT,
    });
    await writeFile(path.join(bundle, "config.json"), JSON.stringify(spec, null, 2));
    return bundle;
  }

  private emit(event: Omit<SandboxEvent, "time">): void {
    const full = { ...event, time: new Date() };
    for (const listener of this.listeners) listener(full);
  }
}

/** Makes the sandbox's hostname (its id) resolve inside it, as a VM's would. */
async function addHostsEntry(rootfs: string, hostname: string): Promise<void> {
  const file = path.join(rootfs, "etc", "hosts");
  const current = await readFile(file, "utf8").catch(() => "127.0.0.1 localhost\n");
  await writeFile(file, `${current.trimEnd()}\n127.0.1.1 ${hostname}\n`);
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
  if (Number.isNaN(input.endTime.getTime())) throw new InvalidSandboxConfigError("end_time is invalid");
}
