/**
 * Where a volume may be mounted in a sandbox: the API checks a create's `volumeMounts` with these
 * rules and the node checks them again before it writes them into the sandbox's OCI spec.
 *
 * A mount path is absolute and normalised (no `.`, `..`, doubled or trailing slashes), printable,
 * and not over what moat or the system needs in every sandbox: `/`, the kernel's file systems
 * (`/proc`, `/sys`, `/dev`), `/etc` (envd writes the hostname and hosts there at each start),
 * moat's own mounts (`/opt/moat`, where envd and node live, and its `sudo`), and the top system
 * directories whose loss leaves nothing runnable (`/usr`, `/bin`, `/lib`…, `/tmp`, `/home`).
 * Paths below the last group (`/home/user/data`, `/var/lib/app`) are fine.
 */

/** Most volumes one sandbox mounts. */
export const MAX_VOLUME_MOUNTS = 16;
/** Longest mount path, in bytes. */
export const MAX_VOLUME_MOUNT_PATH_BYTES = 1024;

/** Not these, nor anything under them. */
const RESERVED_TREES = ["/proc", "/sys", "/dev", "/etc", "/opt/moat", "/usr/local/bin/sudo"];
/** Not exactly these (below them is fine). */
const RESERVED_EXACT = new Set([
  "/",
  "/bin",
  "/boot",
  "/home",
  "/lib",
  "/lib32",
  "/lib64",
  "/libx32",
  "/opt",
  "/root",
  "/run",
  "/sbin",
  "/tmp",
  "/usr",
  "/usr/local",
  "/usr/local/bin",
  "/var",
]);

/** What is wrong with `mountPath` as a volume's mount path, or undefined when it is fine. */
export function volumeMountPathProblem(mountPath: string): string | undefined {
  if (typeof mountPath !== "string" || mountPath === "") return "the mount path is empty";
  if (Buffer.byteLength(mountPath) > MAX_VOLUME_MOUNT_PATH_BYTES) {
    return `the mount path is longer than ${MAX_VOLUME_MOUNT_PATH_BYTES} bytes`;
  }
  // biome-ignore lint/suspicious/noControlCharactersInRegex: control characters are what it looks for.
  if (/[\x00-\x1f\x7f]/.test(mountPath)) return "the mount path holds a control character";
  if (!mountPath.startsWith("/")) return `'${mountPath}' is not an absolute path (start it with /)`;
  const parts = mountPath.split("/").slice(1);
  if (mountPath !== "/" && parts.some((p) => p === "" || p === "." || p === "..")) {
    return `'${mountPath}' is not a normalised path (no '.', '..', doubled or trailing slashes)`;
  }
  if (parts.some((p) => Buffer.byteLength(p) > 255)) return `'${mountPath}' has a name longer than 255 bytes`;
  if (RESERVED_EXACT.has(mountPath)) {
    return `'${mountPath}' is a system directory every sandbox needs; mount the volume below it, e.g. /mnt/data or /home/user/data`;
  }
  const tree = RESERVED_TREES.find((t) => mountPath === t || mountPath.startsWith(`${t}/`));
  if (tree) {
    return `'${mountPath}' is ${mountPath === tree ? "" : "under "}${tree}, which moat or the system needs in every sandbox; mount the volume elsewhere, e.g. /mnt/data`;
  }
  return undefined;
}

/**
 * What is wrong with a sandbox's whole set of mounts (each path's own rules, how many, one path
 * twice, one volume twice, one path inside another), or undefined.
 */
export function volumeMountsProblem(
  mounts: ReadonlyArray<{ name: string; path: string }>,
): string | undefined {
  if (mounts.length > MAX_VOLUME_MOUNTS) {
    return `a sandbox mounts at most ${MAX_VOLUME_MOUNTS} volumes, not ${mounts.length}`;
  }
  const names = new Set<string>();
  const paths = new Set<string>();
  for (const mount of mounts) {
    const problem = volumeMountPathProblem(mount.path);
    if (problem) return `volume '${mount.name}': ${problem}`;
    if (paths.has(mount.path)) return `two volumes are mounted at '${mount.path}'; give each its own path`;
    if (names.has(mount.name)) {
      return `volume '${mount.name}' is mounted twice; mount each volume at one path (several sandboxes may share it)`;
    }
    paths.add(mount.path);
    names.add(mount.name);
  }
  for (const a of paths) {
    for (const b of paths) {
      if (b.startsWith(`${a}/`))
        return `volume mount '${b}' is inside volume mount '${a}'; mount them side by side`;
    }
  }
  return undefined;
}
