import { randomBytes } from "node:crypto";
import { constants } from "node:fs";
import { copyFile, mkdir, readdir, rename, rm, stat } from "node:fs/promises";
import path from "node:path";
import { type ArtifactStore, checkKey } from "./store.js";

/**
 * Artifacts in a directory: a shared mount (NFS) in production, a plain directory in tests. A put
 * copies beside the final name and renames, so readers on any node see whole files or none.
 */
export class DirectoryArtifactStore implements ArtifactStore {
  readonly kind = "directory";

  constructor(readonly root: string) {}

  async putFile(key: string, file: string): Promise<void> {
    const target = this.pathOf(key);
    await mkdir(path.dirname(target), { recursive: true, mode: 0o700 });
    const temp = `${target}.partial-${randomBytes(4).toString("hex")}`;
    try {
      // A clone where the filesystem can (same-filesystem copies cost nothing), else a copy.
      await copyFile(file, temp, constants.COPYFILE_FICLONE);
      await rename(temp, target);
    } catch (err) {
      await rm(temp, { force: true });
      throw err;
    }
  }

  async getFile(key: string, file: string): Promise<boolean> {
    const source = this.pathOf(key);
    const temp = `${file}.partial-${randomBytes(4).toString("hex")}`;
    try {
      await copyFile(source, temp, constants.COPYFILE_FICLONE);
      await rename(temp, file);
      return true;
    } catch (err) {
      await rm(temp, { force: true });
      if ((err as NodeJS.ErrnoException).code === "ENOENT") return false;
      throw err;
    }
  }

  async has(key: string): Promise<boolean> {
    return stat(this.pathOf(key)).then(
      (s) => s.isFile(),
      () => false,
    );
  }

  async delete(key: string): Promise<void> {
    await rm(this.pathOf(key), { force: true });
  }

  async list(prefix: string): Promise<string[]> {
    const dir = path.join(this.root, checkKey(prefix.replace(/\/+$/, "")));
    const entries = await readdir(dir, { recursive: true, withFileTypes: true }).catch(() => []);
    return entries
      .filter((e) => e.isFile() && !e.name.includes(".partial-"))
      .map((e) => path.relative(this.root, path.join(e.parentPath, e.name)))
      .sort();
  }

  private pathOf(key: string): string {
    return path.join(this.root, checkKey(key));
  }
}
