/**
 * Copies of a sandbox's writable layer for snapshots: taken while the sandbox is stopped in place
 * (runsc pause), so that the copy matches the memory image taken at the same moment, and given to
 * each sandbox started from the snapshot before it boots.
 *
 * A sized sandbox's layer lives on its own disk (storage/disk.ts): the disk image is copied whole,
 * block for block, after freezing its file system (FIFREEZE writes everything the host still
 * caches for it into the image and holds writes off, so the copy is a clean file system). The copy
 * keeps holes (`--sparse=always`) and shares blocks where the host's file system can
 * (`--reflink=auto`: btrfs, XFS); on ext4 it costs what the sandbox wrote. An unsized sandbox's
 * layer is a directory, copied with owners, modes and overlay xattrs as they are.
 */
import path from "node:path";
import { CommandError, runCommand } from "@moat/shared";
import { diskPaths } from "./disk.js";
import { rootfsPaths } from "./overlay.js";

/** Where a snapshot keeps its copy of the writable layer, under its directory `files`. */
export function layerCopyPaths(files: string): { disk: string; upper: string } {
  return { disk: path.join(files, "disk.img"), upper: path.join(files, "upper") };
}

/** A copy can take long for a sandbox that wrote gigabytes; past this the snapshot fails. */
const COPY_TIMEOUT_MS = 30 * 60_000;

/**
 * Copies the writable layer of the sandbox in `sandboxDir` into `files` (made by the caller). Its
 * processes must be stopped (runsc pause) so that nothing changes it meanwhile.
 */
export async function copyWritableLayer(sandboxDir: string, sized: boolean, files: string): Promise<void> {
  const target = layerCopyPaths(files);
  if (!sized) {
    await copy(["-a", rootfsPaths(sandboxDir, false).upper, target.upper]);
    return;
  }
  const { image, mountPoint } = diskPaths(sandboxDir);
  await freeze(mountPoint);
  try {
    await copy(["--sparse=always", image, target.disk]);
  } finally {
    await thaw(mountPoint);
  }
}

/**
 * Gives a new sandbox (its directory made, nothing mounted yet) the writable layer of a snapshot:
 * its disk image, which the boot then mounts, or its upper directory.
 */
export async function seedWritableLayer(files: string, sandboxDir: string, sized: boolean): Promise<void> {
  const source = layerCopyPaths(files);
  if (sized) await copy(["--sparse=always", source.disk, diskPaths(sandboxDir).image]);
  else await copy(["-a", source.upper, rootfsPaths(sandboxDir, false).upper]);
}

/**
 * Thaws a disk a crash may have left frozen (reclaim of a snapshot cut short); one that is not
 * frozen or not mounted is left as it is.
 */
export async function thawIfFrozen(sandboxDir: string): Promise<void> {
  await thaw(diskPaths(sandboxDir).mountPoint).catch(() => undefined);
}

async function copy(args: string[]): Promise<void> {
  await runCommand(["cp", "--reflink=auto", ...args], { timeoutMs: COPY_TIMEOUT_MS });
}

async function freeze(mountPoint: string): Promise<void> {
  await runCommand(["fsfreeze", "--freeze", mountPoint], { timeoutMs: 60_000 });
}

async function thaw(mountPoint: string): Promise<void> {
  try {
    await runCommand(["fsfreeze", "--unfreeze", mountPoint], { timeoutMs: 60_000 });
  } catch (err) {
    // Not frozen: nothing to undo.
    if (err instanceof CommandError && /Invalid argument/i.test(err.stderrTail)) return;
    throw err;
  }
}
