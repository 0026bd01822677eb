import { mkdir, readFile, rm } from "node:fs/promises";
import path from "node:path";
import { CommandError, runCommand } from "@moat/shared";

/** Where a sandbox's root filesystem lives on the host. */
export interface SandboxRootfs {
  /** The writable layer: everything the sandbox changed. Kept across pause and resume. */
  upper: string;
  work: string;
  /** The overlay mount the runtime uses as the container's root. */
  merged: string;
}

export function rootfsPaths(sandboxDir: string): SandboxRootfs {
  return {
    upper: path.join(sandboxDir, "upper"),
    work: path.join(sandboxDir, "work"),
    merged: path.join(sandboxDir, "rootfs"),
  };
}

/**
 * Mounts the template (read-only, below) under the sandbox's writable layer. `lowers` is one
 * rootfs or a template's layers, top first.
 */
export async function mountRootfs(lowers: string | string[], sandboxDir: string): Promise<SandboxRootfs> {
  const paths = rootfsPaths(sandboxDir);
  const lowerdir = (Array.isArray(lowers) ? lowers : [lowers]).join(":");
  await Promise.all([paths.upper, paths.work, paths.merged].map((d) => mkdir(d, { recursive: true })));
  await runCommand([
    "mount",
    "-t",
    "overlay",
    "overlay",
    "-o",
    `lowerdir=${lowerdir},upperdir=${paths.upper},workdir=${paths.work}`,
    paths.merged,
  ]);
  return paths;
}

/** Unmounts the overlay; a mount that is already gone is not an error. */
export async function unmountRootfs(sandboxDir: string): Promise<void> {
  const { merged } = rootfsPaths(sandboxDir);
  try {
    await runCommand(["umount", merged]);
  } catch (err) {
    if (err instanceof CommandError && /not mounted|no mount point|No such file/i.test(err.stderrTail))
      return;
    // A runtime still holding files: detach now, the kernel finishes when they close.
    await runCommand(["umount", "--lazy", merged]);
  }
}

/** Unmounts and deletes everything the sandbox had on disk. */
export async function removeSandboxDir(sandboxDir: string): Promise<void> {
  await unmountRootfs(sandboxDir);
  await rm(sandboxDir, { recursive: true, force: true });
}

/** Overlay mounts under `root`, as the kernel lists them (for leak checks and reclaim). */
export async function mountsUnder(root: string): Promise<string[]> {
  const mounts = await readFile("/proc/self/mountinfo", "utf8");
  const prefix = root.endsWith("/") ? root : `${root}/`;
  return mounts
    .split("\n")
    .map((line) => line.split(" ")[4])
    .filter((mountPoint): mountPoint is string => Boolean(mountPoint?.startsWith(prefix)));
}
