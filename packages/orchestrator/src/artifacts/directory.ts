import { randomBytes } from "node:crypto";
import { constants } from "node:fs";
import { copyFile, mkdir, readdir, readFile, rename, rm, stat, writeFile } from "node:fs/promises";
import path from "node:path";
import { checkSeal, fileDigest, sealOf } from "./checksum.js";
import { type ArtifactStore, checkKey, SEAL_SUFFIX } from "./store.js";

/**
 * Artifacts in a directory: a shared mount (NFS) in production, a plain directory in tests. A put
 * copies beside the final name and renames, so readers on any node see whole files or none. Each
 * object's checksum is a file beside it (`<key>.sha256`), written before the object appears.
 */
export class DirectoryArtifactStore implements ArtifactStore {
  readonly kind = "directory";

  constructor(
    readonly root: string,
    private readonly options: { secret?: string } = {},
  ) {}

  async putFile(key: string, file: string): Promise<void> {
    const target = this.pathOf(key);
    await mkdir(path.dirname(target), { recursive: true, mode: 0o700 });
    const suffix = `.partial-${randomBytes(4).toString("hex")}`;
    const temp = `${target}${suffix}`;
    const sealTemp = `${target}${SEAL_SUFFIX}${suffix}`;
    try {
      // A clone where the filesystem can (same-filesystem copies cost nothing), else a copy.
      await copyFile(file, temp, constants.COPYFILE_FICLONE);
      // The digest of the copy: what readers will get, even if `file` changes meanwhile.
      await writeFile(sealTemp, `${sealOf(key, await fileDigest(temp), this.options.secret)}\n`, {
        mode: 0o600,
      });
      await rename(sealTemp, `${target}${SEAL_SUFFIX}`);
      await rename(temp, target);
    } catch (err) {
      await rm(temp, { force: true });
      await rm(sealTemp, { force: true });
      throw err;
    }
  }

  async getFile(key: string, file: string): Promise<boolean> {
    const source = this.pathOf(key);
    const temp = `${file}.partial-${randomBytes(4).toString("hex")}`;
    try {
      const seal = await readFile(`${source}${SEAL_SUFFIX}`, "utf8").catch((err: NodeJS.ErrnoException) => {
        if (err.code === "ENOENT") return undefined;
        throw err;
      });
      await copyFile(source, temp, constants.COPYFILE_FICLONE);
      checkSeal(key, await fileDigest(temp), seal, this.options.secret);
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
    const target = this.pathOf(key);
    await rm(target, { force: true });
    await rm(`${target}${SEAL_SUFFIX}`, { force: true });
  }

  async list(prefix: string): Promise<string[]> {
    const dir = path.join(this.root, checkKey(prefix.replace(/\/+$/, "")));
    const entries = await readdir(dir, { recursive: true, withFileTypes: true }).catch(() => []);
    return entries
      .filter((e) => e.isFile() && !e.name.includes(".partial-") && !e.name.endsWith(SEAL_SUFFIX))
      .map((e) => path.relative(this.root, path.join(e.parentPath, e.name)))
      .sort();
  }

  private pathOf(key: string): string {
    return path.join(this.root, checkObjectKey(key));
  }
}

/** A key an object may have: valid, and not one of the names the store keeps beside objects. */
export function checkObjectKey(key: string): string {
  checkKey(key);
  if (key.endsWith(SEAL_SUFFIX) || key.includes(".partial-")) {
    throw new RangeError(
      `invalid artifact key ${JSON.stringify(key)}: names ending in ${SEAL_SUFFIX} or holding .partial- are the store's own`,
    );
  }
  return key;
}
