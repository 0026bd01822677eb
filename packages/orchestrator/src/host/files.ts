import { randomBytes } from "node:crypto";
import { constants } from "node:fs";
import { access, chmod, readFile, rename, rm, stat, writeFile } from "node:fs/promises";
import path from "node:path";
import { runCommand } from "@moat/shared";

/**
 * Writes a file so that readers see the old content or the new, never a part: a temp file beside
 * it, then rename. Two processes writing the same file at once both succeed; the last rename wins.
 */
export async function writeFileAtomic(file: string, data: string | Uint8Array, mode = 0o644): Promise<void> {
  const tmp = path.join(
    path.dirname(file),
    `.${path.basename(file)}.${process.pid}.${randomBytes(4).toString("hex")}`,
  );
  try {
    await writeFile(tmp, data, { mode });
    await chmod(tmp, mode);
    await rename(tmp, file);
  } catch (err) {
    await rm(tmp, { force: true });
    throw err;
  }
}

/** Reads and parses a JSON file; undefined when it is absent or not valid JSON. */
export async function readJSON(file: string): Promise<unknown> {
  const text = await readFile(file, "utf8").catch(() => undefined);
  if (text === undefined) return undefined;
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}

/** The first executable `name` in PATH (plus the sbin dirs, which a non-login root shell may lack). */
export async function findOnPath(name: string): Promise<string | undefined> {
  const dirs = [...(process.env.PATH ?? "").split(":"), "/usr/local/sbin", "/usr/sbin", "/sbin"];
  for (const dir of new Set(dirs.filter(Boolean))) {
    const candidate = path.join(dir, name);
    try {
      await access(candidate, constants.X_OK);
      if ((await stat(candidate)).isFile()) return candidate;
    } catch {
      // not here
    }
  }
  return undefined;
}

/** PATH for child processes that need sbin tools (chroot, debootstrap, ip). */
export function pathWithSbin(): string {
  const dirs = (process.env.PATH ?? "").split(":").filter(Boolean);
  for (const dir of ["/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin"]) {
    if (!dirs.includes(dir)) dirs.push(dir);
  }
  return dirs.join(":");
}

/** Mount points at or below `dir`, deepest first (from /proc/self/mountinfo). */
export async function mountPointsUnder(dir: string): Promise<string[]> {
  const root = path.resolve(dir);
  const info = await readFile("/proc/self/mountinfo", "utf8");
  const points = info
    .split("\n")
    .map((line) => line.split(" ")[4])
    .filter((p): p is string => p !== undefined)
    .map((p) => p.replace(/\\([0-7]{3})/g, (_, oct: string) => String.fromCharCode(Number.parseInt(oct, 8))))
    .filter((p) => p === root || p.startsWith(`${root}/`));
  return [...new Set(points)].sort((a, b) => b.length - a.length);
}

/**
 * Removes a directory tree that a chroot build may have left mounts in (an interrupted debootstrap
 * leaves /proc, /sys or a bind of /dev inside its target). Unmounts them first, and `rm
 * --one-file-system` refuses to cross into anything still mounted, so a host /dev is never emptied.
 */
export async function removeTree(dir: string): Promise<void> {
  for (const point of await mountPointsUnder(dir)) {
    await runCommand(["umount", "--lazy", point], { timeoutMs: 30_000 });
  }
  await runCommand(["rm", "-rf", "--one-file-system", dir], { timeoutMs: 10 * 60_000 });
}
