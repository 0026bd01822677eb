/**
 * moat's data directory holds tenant data (sandbox records with tokens and env vars, writable
 * layers, memory images, the database with signing keys, uploaded files): only root may enter it.
 * The directory itself is 0700, what holds secrets is 0700 (directories) and 0600 (files).
 */
import { chmod, lstat, mkdir, readdir, writeFile } from "node:fs/promises";
import path from "node:path";

/** Makes `dir` (and missing parents) and leaves it 0700 whatever it was before. */
export async function makePrivateDir(dir: string): Promise<void> {
  await mkdir(dir, { recursive: true, mode: 0o700 });
  await chmod(dir, 0o700);
}

/** Writes `file` readable by its owner only, an existing file included. */
export async function writePrivateFile(file: string, data: string | Uint8Array): Promise<void> {
  await writeFile(file, data, { mode: 0o600 });
  await chmod(file, 0o600);
}

/**
 * Tightens a tree of moat's own files (never a root filesystem: their modes are the sandbox's):
 * directories 0700, files 0600 (executables 0700). Symlinks are not followed; what is missing is
 * skipped.
 */
export async function makeTreePrivate(root: string): Promise<void> {
  const st = await lstat(root).catch(() => undefined);
  if (!st || st.isSymbolicLink()) return;
  if (!st.isDirectory()) {
    if (st.isFile()) await chmod(root, st.mode & 0o100 ? 0o700 : 0o600);
    return;
  }
  await chmod(root, 0o700);
  const names = await readdir(root).catch(() => [] as string[]);
  for (const name of names) await makeTreePrivate(path.join(root, name));
}

/**
 * Makes `dataDir` 0700 and its direct entries private (directories 0700, files 0600), without
 * entering them: each component tightens the trees it owns. Symlinks (a shared runtime cache)
 * are left alone.
 */
export async function makeDataDirPrivate(dataDir: string): Promise<void> {
  await makePrivateDir(dataDir);
  const entries = await readdir(dataDir, { withFileTypes: true }).catch(() => []);
  for (const entry of entries) {
    const file = path.join(dataDir, entry.name);
    if (entry.isDirectory()) await chmod(file, 0o700);
    else if (entry.isFile()) await chmod(file, 0o600);
  }
}
