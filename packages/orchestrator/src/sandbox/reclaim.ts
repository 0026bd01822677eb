/**
 * Startup reconcile: what a node finds on its host after a restart (or a crash) against the
 * sandbox records it wrote. Sandboxes whose container, network and mount survived are adopted
 * (one a crash left stopped in place for a snapshot is resumed first), paused ones kept (a pause
 * a crash cut is settled), everything of the rest released, and what no record owns (containers,
 * namespaces, links, mounts, loop devices, unfinished and fork snapshots) reaped.
 */
import path from "node:path";
import type { Logger } from "@moat/shared";
import { processAlive } from "../host/process.js";
import { deleteLink, deleteNamespace, listLinks, listNamespaces } from "../network/netns.js";
import { destroySandboxNetwork, openIngress } from "../network/sandbox-network.js";
import { Slot, slotIndexOfLink, slotIndexOfNamespace } from "../network/slot.js";
import type { ContainerState, Runsc } from "../runtime/runsc.js";
import { imageExists, prepareImage, removeImage } from "../snapshot/image.js";
import { detachLoop, diskPaths, loopDevicesUnder, mountedDevices } from "../storage/disk.js";
import { thawIfFrozen } from "../storage/layer-copy.js";
import { mountsUnder, removeSandboxDir, unmountRootfs } from "../storage/overlay.js";
import { memoryImagePath, readRecords, type SandboxRecord, sandboxDir, writeRecord } from "./record.js";

/** What the host shows of one recorded sandbox. */
export interface ReclaimFacts {
  /** runsc lists its current container as running and the sandbox process is alive. */
  containerRunning: boolean;
  /** Both namespaces of its slot exist. */
  networkPresent: boolean;
  /** A committed memory image is in its directory. */
  imageCommitted: boolean;
}

export type ReclaimDecision =
  /** It runs on: the node takes it back. `pauseInterrupted`: a pause was cut before its checkpoint ended. */
  | { action: "adopt"; pauseInterrupted: boolean }
  /** Paused. `settle`: a pause whose runtime is gone, to be finished with what it saved. */
  | { action: "keep-paused"; settle: boolean }
  /** Nothing to keep (a create, a pool entry, a build or snapshot sandbox cut short, or gone). */
  | { action: "release" };

export function reclaimDecision(record: SandboxRecord | undefined, facts: ReclaimFacts): ReclaimDecision {
  if (!record) return { action: "release" };
  const { state } = record;
  // A kill began: its sandbox may be half released, and nobody wants it back (paused or not).
  if (state === "stopping") return { action: "release" };
  // A committed image means the checkpoint finished and the runtime stopped, whatever runsc
  // still says about a process the host has not reaped yet.
  const checkpointed = state === "pausing" && facts.imageCommitted;
  const live =
    (state === "running" || state === "pausing" || state === "snapshotting") &&
    !checkpointed &&
    record.slotIndex > 0 &&
    facts.containerRunning &&
    facts.networkPresent;
  if (live) return { action: "adopt", pauseInterrupted: state === "pausing" };
  if (state === "paused") return { action: "keep-paused", settle: false };
  if (state === "pausing") return { action: "keep-paused", settle: true };
  return { action: "release" };
}

export interface ReclaimHost {
  dataDir: string;
  runsc: Runsc;
  logger: Logger;
  /** The node's prefix of named namespaces: only those are its own to adopt or reap (network/slot.ts). */
  namePrefix: string;
  /** Registers a sandbox that runs on; its runtime is adopted as it is. */
  adopt(record: SandboxRecord, dir: string, runtimePID: number, pauseInterrupted: boolean): void;
  /** Registers a paused sandbox. */
  keepPaused(record: SandboxRecord, dir: string): void;
  /** Takes back the whole sandbox snapshots, and removes unfinished and fork ones. */
  loadSnapshots(): Promise<void>;
  /** Directories of the sandboxes running now (their mounts are kept). */
  runningDirs(): string[];
}

export interface ReclaimReport {
  adopted: string[];
  paused: string[];
  released: string[];
  reaped: string[];
}

export async function reclaim(host: ReclaimHost): Promise<ReclaimReport> {
  const report: ReclaimReport = { adopted: [], paused: [], released: [], reaped: [] };
  const { runsc, dataDir } = host;
  const containers = new Map((await runsc.list()).map((c) => [c.id, c]));
  const namespaces = new Set(await listNamespaces());
  const keptContainers = new Set<string>();
  const keptSlots = new Set<number>();

  await host.loadSnapshots();
  for (const { dir: dirName, record } of await readRecords(dataDir)) {
    const dir = sandboxDir(dataDir, dirName);
    let container = record ? containers.get(record.lifecycleID) : undefined;
    if (record?.state === "snapshotting" && container)
      container = await resumeCutSnapshot(runsc, dir, container);
    const slot = record?.slotIndex ? new Slot(record.slotIndex, host.namePrefix) : undefined;
    const decision = reclaimDecision(record, {
      containerRunning: container?.status === "running" && (await processAlive(container.pid)),
      networkPresent:
        slot !== undefined && namespaces.has(slot.outerNamespace) && namespaces.has(slot.guestNamespace),
      imageCommitted: record?.state === "pausing" && (await imageExists(memoryImagePath(dir))),
    });
    if (decision.action === "adopt" && record && container && slot) {
      // A pause that died before its checkpoint ended: the sandbox simply goes on running, and
      // the image it began is no use.
      if (decision.pauseInterrupted || record.state === "snapshotting")
        await openIngress(slot).catch(() => undefined);
      await removeImage(memoryImagePath(dir));
      host.adopt(record, dir, container.pid, decision.pauseInterrupted);
      keptContainers.add(record.lifecycleID);
      keptSlots.add(slot.index);
      report.adopted.push(record.sandboxID);
      continue;
    }
    if (decision.action === "keep-paused" && record) {
      if (decision.settle) {
        // Whatever image was committed is kept, and the files always are.
        await runsc.destroy(record.lifecycleID).catch(() => undefined);
        if (slot) await destroySandboxNetwork(slot).catch(() => undefined);
        await unmountRootfs(dir);
        record.memory = await imageExists(memoryImagePath(dir));
        record.state = "paused";
        await writeRecord(dataDir, record);
      }
      await prepareImage(memoryImagePath(dir));
      host.keepPaused(record, dir);
      report.paused.push(record.sandboxID);
      continue;
    }
    if (record) await runsc.destroy(record.lifecycleID).catch(() => undefined);
    if (slot) await destroySandboxNetwork(slot).catch(() => undefined);
    await removeSandboxDir(dir);
    report.released.push(record?.sandboxID ?? dirName);
  }

  await reapUnowned(host, keptContainers, keptSlots, [...containers.keys()], report.reaped);
  const found = Object.values(report).some((ids) => Array.isArray(ids) && ids.length > 0);
  host.logger[found ? "info" : "debug"](report, "reclaim finished");
  return report;
}

/**
 * A snapshot a crash cut may have left its sandbox stopped in place (runsc pause) and its disk
 * frozen: both are undone, and the sandbox runs on as it was. Answers the container as it is now.
 */
async function resumeCutSnapshot(
  runsc: Runsc,
  dir: string,
  container: ContainerState,
): Promise<ContainerState> {
  await thawIfFrozen(dir);
  if (container.status === "paused") await runsc.resume(container.id).catch(() => undefined);
  return (await runsc.state(container.id).catch(() => undefined)) ?? container;
}

/**
 * The named namespaces of this node's prefix that no kept sandbox owns. Names of other prefixes
 * belong to other nodes sharing the kernel (or to anything else) and are never touched.
 */
export function unownedNamespaces(
  names: string[],
  namePrefix: string,
  keptSlots: ReadonlySet<number>,
): string[] {
  return names.filter((name) => {
    const index = slotIndexOfNamespace(name, namePrefix);
    return index !== undefined && !keptSlots.has(index);
  });
}

/** Sandbox links of the node's own network namespace that no kept sandbox owns. */
export function unownedLinks(names: string[], keptSlots: ReadonlySet<number>): string[] {
  return names.filter((name) => {
    const index = slotIndexOfLink(name);
    return index !== undefined && !keptSlots.has(index);
  });
}

/** Containers, namespaces, links, mounts and loop devices no kept sandbox owns. */
async function reapUnowned(
  host: ReclaimHost,
  keptContainers: Set<string>,
  keptSlots: Set<number>,
  containers: string[],
  reaped: string[],
): Promise<void> {
  for (const id of containers) {
    if (keptContainers.has(id)) continue;
    await host.runsc.destroy(id);
    reaped.push(`container ${id}`);
  }
  for (const name of unownedNamespaces(await listNamespaces(), host.namePrefix, keptSlots)) {
    await deleteNamespace(name);
    reaped.push(`netns ${name}`);
  }
  for (const name of unownedLinks(await listLinks(), keptSlots)) {
    await deleteLink(name);
    reaped.push(`link ${name}`);
  }
  const keptMounts = new Set(
    host.runningDirs().flatMap((dir) => [path.join(dir, "rootfs"), diskPaths(dir).mountPoint]),
  );
  const sandboxesDir = path.join(host.dataDir, "sandboxes");
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
}
