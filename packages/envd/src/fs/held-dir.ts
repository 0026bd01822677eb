import { constants } from "node:fs";
import { type FileHandle, mkdir, open } from "node:fs/promises";
import path from "node:path";
import type { User } from "../auth/users.js";
import { type Access, SEARCH, WRITE } from "../services/filesystem/access.js";

const isRoot = process.getuid?.() === 0;

/**
 * A directory held open by descriptor. Its entries are named through /proc/self/fd/<fd>, which the
 * kernel resolves to the directory itself (openat semantics): once it has been opened and checked,
 * no symlink swapped into the path above it can send a create, rename or unlink elsewhere. envd
 * runs as root, so a write redirected into /etc by a racing `ln -s` would land there.
 */
export class HeldDir {
  /** The first directory `holdDir` created on the way here, if it created any. */
  firstCreated: string | undefined;

  constructor(
    readonly handle: FileHandle,
    /** The path it was reached by, for messages. */
    readonly path: string,
  ) {}

  /** A path naming `name` inside this very directory. */
  entry(name: string): string {
    if (name === "" || name === "." || name === ".." || name.includes("/")) {
      throw Object.assign(new Error(`invalid file name '${name}'`), { code: "EINVAL" });
    }
    return `/proc/self/fd/${this.handle.fd}/${name}`;
  }

  close(): Promise<void> {
    return this.handle.close();
  }
}

/**
 * Opens `dir` on behalf of a user and returns it held. The walk goes one held directory at a time,
 * each needing search permission. With `createAs`, it is `mkdir -p`: each directory it creates
 * needs write and search on its parent and is owned by that user; directories that already
 * existed keep their owners. The caller checks what it does inside the returned directory.
 */
export async function holdDir(dir: string, access: Access, createAs?: User): Promise<HeldDir> {
  let held = new HeldDir(await open("/", constants.O_RDONLY | constants.O_DIRECTORY), "/");
  let firstCreated: string | undefined;
  try {
    for (const name of path.resolve(dir).split("/").filter(Boolean)) {
      access.requireOn(await held.handle.stat(), SEARCH, held.path);
      const here = path.join(held.path, name);
      let child: HeldDir;
      try {
        child = await openChild(held, name, here, false);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== "ENOENT" || !createAs) throw err;
        await access.requireOpened(held.handle, WRITE | SEARCH);
        let created = true;
        try {
          await mkdir(held.entry(name), { mode: 0o755 });
        } catch (mkdirErr) {
          // Another request may have created it in the meantime.
          if ((mkdirErr as NodeJS.ErrnoException).code !== "EEXIST") throw mkdirErr;
          created = false;
        }
        // What was just made is opened without following a link: only it may be given away.
        child = await openChild(held, name, here, created);
        if (created && isRoot) await child.handle.chown(createAs.uid, createAs.gid);
        if (created) firstCreated ??= here;
      }
      await held.close();
      held = child;
    }
    await access.requireOpened(held.handle, SEARCH);
    held.firstCreated = firstCreated;
    return held;
  } catch (err) {
    await held.close().catch(() => {});
    throw err;
  }
}

/**
 * Opens a directory one level down. A symlink is followed, as the kernel follows it for the user
 * (where it leads is what gets held and checked), unless `noFollow`: then a symlink is ELOOP.
 * gVisor follows a final symlink despite O_NOFOLLOW when O_DIRECTORY is given too, so that case
 * opens without O_DIRECTORY and checks the type itself.
 */
async function openChild(parent: HeldDir, name: string, here: string, noFollow: boolean): Promise<HeldDir> {
  const notADirectory = () =>
    Object.assign(new Error(`'${here}' exists and is not a directory`), { code: "ENOTDIR" });
  let handle: FileHandle;
  try {
    const flags = noFollow ? constants.O_NOFOLLOW | constants.O_NONBLOCK : constants.O_DIRECTORY;
    handle = await open(parent.entry(name), constants.O_RDONLY | flags);
  } catch (err) {
    throw (err as NodeJS.ErrnoException).code === "ENOTDIR" ? notADirectory() : err;
  }
  if (noFollow && !(await handle.stat()).isDirectory()) {
    await handle.close();
    throw notADirectory();
  }
  return new HeldDir(handle, here);
}
