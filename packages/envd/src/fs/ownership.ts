import { chown, mkdir, stat } from "node:fs/promises";
import path from "node:path";
import type { User } from "../auth/users.js";

const isRoot = process.getuid?.() === 0;

/** Gives `target` to the user, so that what envd creates for a user is owned by them. */
export async function chownTo(target: string, user: User): Promise<void> {
  if (isRoot) await chown(target, user.uid, user.gid);
}

/**
 * `mkdir -p` on behalf of a user: every directory this call creates is owned by the user; the
 * directories that already existed keep their owners. Returns the first directory created, if any.
 */
export async function makeDirsAs(dir: string, user: User): Promise<string | undefined> {
  const missing: string[] = [];
  for (let d = path.resolve(dir); ; d = path.dirname(d)) {
    try {
      if (!(await stat(d)).isDirectory()) {
        throw Object.assign(new Error(`'${d}' exists and is not a directory`), { code: "ENOTDIR" });
      }
      break;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "ENOENT") throw err;
      missing.unshift(d);
      if (d === path.dirname(d)) break;
    }
  }
  for (const d of missing) {
    try {
      await mkdir(d, { mode: 0o755 });
    } catch (err) {
      // Another request may have created it in the meantime.
      if ((err as NodeJS.ErrnoException).code !== "EEXIST") throw err;
      continue;
    }
    await chownTo(d, user);
  }
  return missing[0];
}
