import { mkdir, readFile, rm } from "node:fs/promises";
import path from "node:path";
import { makePrivateDir, runCommand } from "@moat/shared";
import { diskPaths, unmount, unmountDisk } from "./disk.js";

/** Where a sandbox's root filesystem lives on the host. */
export interface SandboxRootfs {
  /** The writable layer: everything the sandbox changed. Kept across pause and resume. */
  upper: string;
  work: string;
  /** The overlay mount the runtime uses as the container's root. */
  merged: string;
}

/**
 * The rootfs paths of a sandbox. `sized`: its writable layer is on its own disk (storage/disk.ts);
 * else (disk limits off, or a sandbox made before them) directly in its directory.
 */
export function rootfsPaths(sandboxDir: string, sized: boolean): SandboxRootfs {
  const layerDir = sized ? diskPaths(sandboxDir).mountPoint : sandboxDir;
  return {
    upper: path.join(layerDir, "upper"),
    work: path.join(layerDir, "work"),
    merged: path.join(sandboxDir, "rootfs"),
  };
}

/**
 * Mounts the template (read-only, below) under the sandbox's writable layer. `lowers` is one
 * rootfs or a template's layers, top first. A sized sandbox's disk must be mounted already.
 * nosuid,nodev: what the sandbox made (a setuid copy of a shell, a device node) is inert on the host.
 */
export async function mountRootfs(
  lowers: string | string[],
  sandboxDir: string,
  sized: boolean,
): Promise<SandboxRootfs> {
  const paths = rootfsPaths(sandboxDir, sized);
  const lowerdir = (Array.isArray(lowers) ? lowers : [lowers]).join(":");
  await mkdir(paths.upper, { recursive: true });
  await Promise.all([paths.work, paths.merged].map((d) => makePrivateDir(d)));
  await runCommand([
    "mount",
    "-t",
    "overlay",
    "overlay",
    "-o",
    `nosuid,nodev,lowerdir=${lowerdir},upperdir=${paths.upper},workdir=${paths.work}`,
    paths.merged,
  ]);
  return paths;
}

/** Unmounts the overlay, then the disk under it; what is already gone is not an error. */
export async function unmountRootfs(sandboxDir: string): Promise<void> {
  await unmountOverlay(sandboxDir);
  await unmountDisk(sandboxDir);
}

/** Unmounts the overlay only (the disk stays mounted). */
export async function unmountOverlay(sandboxDir: string): Promise<void> {
  await unmount(path.join(sandboxDir, "rootfs"));
}

/** Unmounts and deletes everything the sandbox had on disk. */
export async function removeSandboxDir(sandboxDir: string): Promise<void> {
  await unmountRootfs(sandboxDir);
  await rm(sandboxDir, { recursive: true, force: true });
}

/** Mounts under `root`, as the kernel lists them (for leak checks and reclaim). */
export async function mountsUnder(root: string): Promise<string[]> {
  const mounts = await readFile("/proc/self/mountinfo", "utf8");
  const prefix = root.endsWith("/") ? root : `${root}/`;
  return mounts
    .split("\n")
    .map((line) => line.split(" ")[4])
    .filter((mountPoint): mountPoint is string => Boolean(mountPoint?.startsWith(prefix)));
}
