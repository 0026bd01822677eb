/**
 * A sandbox's disk: a sparse ext4 image of the sandbox's disk size (`<dir>/disk.img`), loop-mounted
 * nosuid,nodev at `<dir>/disk`, holding the overlay's upper and work dirs. Writing past its size
 * fails with ENOSPC inside the sandbox and nothing outside notices; the host only gives it the
 * blocks it actually wrote (deleted files are handed back through discard). The image stays while
 * the sandbox is paused and is mounted again on resume.
 *
 * `mount -o loop` sets the loop device to clear itself on the last unmount, and reuses the device
 * (and so the same mounted file system) when the image is still attached, e.g. after a lazy unmount
 * of a previous run: one image is never mounted twice as two file systems.
 */
import { chmod, mkdir, open, readdir, readFile, realpath, rename, rm, stat } from "node:fs/promises";
import path from "node:path";
import { setTimeout } from "node:timers/promises";
import { CommandError, makePrivateDir, runCommand } from "@moat/shared";

/** Smallest disk a sandbox may have: room for ext4's own metadata and a template's boot writes. */
export const MIN_DISK_SIZE_MB = 64;
/** Largest: images are sparse, but a size beyond this is a typo, not a plan. */
export const MAX_DISK_SIZE_MB = 1024 * 1024;
/** Mount options of the sandbox disk: files from inside never act as setuid programs or devices. */
export const MOUNT_OPTIONS = "loop,nosuid,nodev,noatime,discard";

export function diskPaths(sandboxDir: string): { image: string; mountPoint: string } {
  return { image: path.join(sandboxDir, "disk.img"), mountPoint: path.join(sandboxDir, "disk") };
}

/**
 * Mounts the sandbox's disk, making the image first when there is none (a new sandbox, or one whose
 * writable layer was reset). Returns the mount point.
 */
export async function mountDisk(sandboxDir: string, sizeMB: number): Promise<string> {
  const { image, mountPoint } = diskPaths(sandboxDir);
  const fresh = !(await exists(image));
  if (fresh) await makeImage(image, sizeMB);
  // Mounted already (a release that failed halfway): stacking a second mount would hide nothing.
  if (!(await isMountPoint(mountPoint))) {
    await makePrivateDir(mountPoint);
    try {
      await runCommand(["mount", "-o", MOUNT_OPTIONS, image, mountPoint], { timeoutMs: 30_000 });
    } catch (err) {
      if (fresh) await rm(image, { force: true });
      throw err;
    }
  }
  try {
    if (fresh) await chmod(mountPoint, 0o700);
    // The overlay's upper dir is the sandbox's "/": world-readable like any root directory.
    const upper = path.join(mountPoint, "upper");
    if (await mkdir(upper, { recursive: true })) await chmod(upper, 0o755);
    await makePrivateDir(path.join(mountPoint, "work"));
  } catch (err) {
    await unmountDisk(sandboxDir);
    throw err;
  }
  return mountPoint;
}

/** Unmounts the disk; one not mounted is not an error. The loop device clears itself. */
export async function unmountDisk(sandboxDir: string): Promise<void> {
  await unmount(diskPaths(sandboxDir).mountPoint);
}

/** Drops the disk image: the next mount starts from an empty writable layer. */
export async function removeDisk(sandboxDir: string): Promise<void> {
  await unmountDisk(sandboxDir);
  await rm(diskPaths(sandboxDir).image, { force: true });
}

export interface LoopDevice {
  /** e.g. /dev/loop3 */
  device: string;
  backingFile: string;
}

/** Loop devices whose backing file is under `root` (for leak checks and reclaim). */
export async function loopDevicesUnder(root: string): Promise<LoopDevice[]> {
  // The kernel records the image's real path.
  const real = await realpath(root).catch(() => root);
  const prefix = real.endsWith("/") ? real : `${real}/`;
  const names = await readdir("/sys/block").catch(() => [] as string[]);
  const devices: LoopDevice[] = [];
  for (const name of names.filter((n) => n.startsWith("loop"))) {
    const file = await readFile(`/sys/block/${name}/loop/backing_file`, "utf8").catch(() => "");
    // The kernel appends " (deleted)" once the image is gone.
    const backingFile = file.trim().replace(/ \(deleted\)$/, "");
    if (backingFile.startsWith(prefix)) devices.push({ device: `/dev/${name}`, backingFile });
  }
  return devices.sort((a, b) => a.device.localeCompare(b.device));
}

/** Detaches a loop device; one in use detaches once its last user is gone. */
export async function detachLoop(device: string): Promise<void> {
  try {
    await runCommand(["losetup", "--detach", device]);
  } catch (err) {
    if (err instanceof CommandError && /No such device|not a block device|No such file/i.test(err.stderrTail))
      return;
    throw err;
  }
}

/** Block devices that are mounted somewhere (their `/dev/…` names, from mountinfo). */
export async function mountedDevices(): Promise<Set<string>> {
  const info = await readFile("/proc/self/mountinfo", "utf8");
  const sources = new Set<string>();
  for (const line of info.split("\n")) {
    const fields = line.split(" - ")[1]?.split(" ");
    if (fields?.[1]?.startsWith("/dev/")) sources.add(fields[1]);
  }
  return sources;
}

export async function isMountPoint(dir: string): Promise<boolean> {
  const info = await readFile("/proc/self/mountinfo", "utf8");
  return info.split("\n").some((line) => line.split(" ")[4] === dir);
}

const UNMOUNT_BUSY_RETRIES = 20;
const UNMOUNT_BUSY_DELAY_MS = 100;

/** Unmounts `mountPoint`; lazily when something still holds files there (a runtime exiting). */
export async function unmount(mountPoint: string): Promise<void> {
  // Busy usually means a sandbox's processes (runsc's gofer) are still exiting: give them a moment,
  // so that the loop device is free when this returns, before falling back to a lazy unmount.
  for (let attempt = 0; ; attempt++) {
    try {
      await runCommand(["umount", mountPoint]);
      return;
    } catch (err) {
      if (!(err instanceof CommandError)) throw err;
      if (/not mounted|no mount point|No such file/i.test(err.stderrTail)) return;
      if (!/busy/i.test(err.stderrTail) || attempt >= UNMOUNT_BUSY_RETRIES) break;
      await setTimeout(UNMOUNT_BUSY_DELAY_MS);
    }
  }
  // Detach now; the kernel finishes (and clears the loop device) when the last file closes.
  await runCommand(["umount", "--lazy", mountPoint]);
}

/**
 * A sparse file of `sizeMB` with an empty ext4 on it. Journal kept (a host crash must not cost a
 * paused sandbox its files) but not zeroed: the sparse file reads as zeros already, so the new
 * disk takes ~4 MB of the host's. No blocks are reserved for root: the sandbox's `user` gets the
 * whole size. `rootOwner`: who owns the file system's root directory (default root).
 */
export async function makeImage(
  image: string,
  sizeMB: number,
  options: { label?: string; rootOwner?: { uid: number; gid: number } } = {},
): Promise<void> {
  const partial = `${image}.partial`;
  const handle = await open(partial, "w", 0o600);
  try {
    await handle.truncate(sizeMB * 1024 * 1024);
  } finally {
    await handle.close();
  }
  try {
    await runCommand(
      [
        "mkfs.ext4",
        "-q",
        "-F",
        "-m",
        "0",
        "-E",
        [
          "lazy_itable_init=1,lazy_journal_init=1",
          ...(options.rootOwner ? [`root_owner=${options.rootOwner.uid}:${options.rootOwner.gid}`] : []),
        ].join(","),
        "-L",
        options.label ?? "moat-sandbox",
        partial,
      ],
      { timeoutMs: 60_000 },
    );
    await rename(partial, image);
  } catch (err) {
    await rm(partial, { force: true });
    throw err;
  }
}

async function exists(file: string): Promise<boolean> {
  return (await stat(file).catch(() => undefined)) !== undefined;
}
