/**
 * A SandboxFactory without runsc, namespaces or mounts: sandboxes "run" as soon as they boot, and
 * each operation can be told to fail. The lifecycle (sandbox/manager.ts) runs on it unchanged.
 */
import { mkdir, rm, writeFile } from "node:fs/promises";
import path from "node:path";
import { Slot } from "../../src/network/slot.js";
import {
  type BootOptions,
  type InstanceBuild,
  resetRuntime,
  type SandboxFactory,
} from "../../src/sandbox/factory.js";
import type { Sandbox } from "../../src/sandbox/sandbox.js";
import { partialPath } from "../../src/snapshot/image.js";

type Operation = "boot" | "init" | "freeze" | "checkpoint" | "snapshot" | "stop" | "release";

/** A pid that no process has (above the kernel's pid_max). */
export const DEAD_PID = 2 ** 22 + 1;

export class FakeFactory implements SandboxFactory {
  /** Each call, in order: "boot:<sandboxID>" and so on. */
  readonly calls: string[] = [];
  /** Operations that throw on their next call. */
  readonly failNext = new Set<Operation>();
  /** What isRunning answers (a failed pause asks whether the runtime lives on). */
  running = true;
  /** The pid booted sandboxes get: this process by default, alive for the watchdog. */
  runtimePID = process.pid;
  private nextSlot = 1;
  /** Runtimes booted and not released. */
  readonly live = new Set<string>();

  private step(operation: Operation, sandbox: Sandbox): void {
    this.calls.push(`${operation}:${sandbox.id}`);
    if (this.failNext.delete(operation)) throw new Error(`fake ${operation} failed`);
  }

  async instance(_build: InstanceBuild): Promise<Sandbox> {
    throw new Error("the fake factory makes no node sandboxes");
  }

  /** The memory image each boot restored (undefined: a fresh boot), by sandbox id. */
  readonly bootImages = new Map<string, string | undefined>();

  /** While set, boots wait for it (creates held mid-boot). */
  bootGate: Promise<void> | undefined;

  async boot(sandbox: Sandbox, options: BootOptions = {}): Promise<void> {
    await this.bootGate;
    this.bootImages.set(sandbox.id, options.image);
    const slot = new Slot(this.nextSlot++);
    sandbox.runtime.push("network", () => {
      this.live.delete(sandbox.id);
    });
    sandbox.slot = slot;
    sandbox.record.slotIndex = slot.index;
    this.live.add(sandbox.id);
    options.lap?.("network");
    this.step("boot", sandbox);
    sandbox.runtimePID = this.runtimePID;
    options.lap?.("envdReady");
  }

  /** The token each init proved (a sandbox from a snapshot proves its source's), by sandbox id. */
  readonly initTokens = new Map<string, string | undefined>();

  async init(sandbox: Sandbox, presentToken?: string): Promise<void> {
    this.step("init", sandbox);
    this.initTokens.set(sandbox.id, presentToken);
  }

  async freeze(sandbox: Sandbox): Promise<void> {
    this.step("freeze", sandbox);
  }

  async applyEgress(sandbox: Sandbox): Promise<void> {
    this.calls.push(`egress:${sandbox.id}`);
  }

  async reopen(sandbox: Sandbox): Promise<void> {
    this.calls.push(`reopen:${sandbox.id}`);
  }

  async refuse(sandbox: Sandbox): Promise<void> {
    this.calls.push(`refuse:${sandbox.id}`);
  }

  /** Sandboxes whose runtime a kill stopped (their release may still be under way). */
  readonly stopped = new Set<string>();
  /** When set, releases wait for it (a slow background release). */
  releaseGate: Promise<void> | undefined;

  async stop(sandbox: Sandbox): Promise<void> {
    this.step("stop", sandbox);
    if (sandbox.runtime.size > 0) this.stopped.add(sandbox.id);
  }

  async checkpoint(sandbox: Sandbox, image: string): Promise<void> {
    this.step("checkpoint", sandbox);
    await mkdir(partialPath(image), { recursive: true });
  }

  /** A snapshot's files: an upper directory with one file naming its source (disk sizes are 0 here). */
  async snapshotInPlace(
    sandbox: Sandbox,
    target: { image: string; files: string },
    whileStopped?: () => void,
  ): Promise<void> {
    this.step("snapshot", sandbox);
    await mkdir(partialPath(target.image), { recursive: true });
    await mkdir(path.join(target.files, "upper"), { recursive: true });
    await writeFile(path.join(target.files, "upper", "source"), sandbox.id);
    whileStopped?.();
  }

  async isRunning(): Promise<boolean> {
    return this.running;
  }

  adoptRuntime(sandbox: Sandbox, runtimePID: number): void {
    sandbox.slot = new Slot(sandbox.record.slotIndex);
    sandbox.runtimePID = runtimePID;
    this.live.add(sandbox.id);
    sandbox.runtime.push("network", () => {
      this.live.delete(sandbox.id);
    });
  }

  async releaseRuntime(sandbox: Sandbox): Promise<void> {
    this.calls.push(`releaseRuntime:${sandbox.id}`);
    try {
      await sandbox.runtime.run();
    } finally {
      resetRuntime(sandbox);
    }
  }

  async release(sandbox: Sandbox): Promise<void> {
    this.step("release", sandbox);
    await this.releaseGate;
    try {
      await sandbox.runtime.run();
    } finally {
      await sandbox.cleanup.run();
    }
  }

  async reset(sandbox: Sandbox): Promise<void> {
    await this.releaseRuntime(sandbox);
  }

  async startAndWaitReady(): Promise<void> {}

  async startBuildSandbox(): Promise<Sandbox> {
    throw new Error("the fake factory makes no build sandboxes");
  }

  async stopBuildSandbox(): Promise<void> {}

  async removeDirectory(dir: string): Promise<void> {
    await rm(dir, { recursive: true, force: true });
  }

  async settled(): Promise<void> {}
}
