import { randomBytes } from "node:crypto";
import type { Stats } from "node:fs";
import { type FileHandle, lstat, open, realpath, rename, rm, stat } from "node:fs/promises";
import path from "node:path";
import type { Readable } from "node:stream";
import type { Logger } from "@moat/shared";
import type { User } from "../auth/users.js";
import { type HeldDir, holdDir } from "../fs/held-dir.js";
import { readMetadata, writeMetadata } from "../fs/metadata.js";
import { UPLOAD_TEMP_PREFIX } from "../fs/upload-temp.js";
import { type Access, accessFor, SEARCH, WRITE } from "../services/filesystem/access.js";
import { isDecompressionError, pump } from "./body.js";
import { HTTPError, toHTTPError } from "./errors.js";

/** The REST EntryInfo of an uploaded file. */
export interface WrittenFile {
  path: string;
  name: string;
  type: "file";
  metadata?: Record<string, string>;
}

/** Mode of files envd creates (what 0o666 gives under the usual 022 umask, as in envd). */
const NEW_FILE_MODE = 0o644;
/**
 * How much of an upload may wait for the disk before the socket is paused: large enough that
 * reading the network and writing the file overlap (the default 16 KiB stalls on every chunk).
 */
const WRITE_BUFFER_BYTES = 1024 * 1024;
const isRoot = process.getuid?.() === 0;

/**
 * Where writing `target` puts the bytes: the target itself, or for a symlink to an existing file
 * the file it leads to (so the link keeps pointing at the new content). The user needs search
 * permission along the way; a directory or another kind of file is 400.
 */
async function resolveTarget(target: string, access: Access): Promise<string> {
  let stats: Stats;
  try {
    await access.requireSearch(path.dirname(target));
    stats = await stat(target);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === "ENOENT") return target;
    if (code === "ENOTDIR") throw new HTTPError(400, `path '${target}': a parent is not a directory`);
    throw toHTTPError(err, `error checking path '${target}'`);
  }
  if (stats.isDirectory()) throw new HTTPError(400, `path '${target}' is a directory`);
  if (!stats.isFile()) throw new HTTPError(400, `path '${target}' is not a regular file`);
  return realpath(target);
}

/**
 * Streams `source()` into `target` on behalf of `user`, with the user's permissions: writing over
 * an existing file needs write permission on it (it keeps its owner and mode), creating one needs
 * write permission on the directory (it is the user's). Missing parents are created as the user.
 * The bytes go to a temp file in the destination's directory (held open, see HeldDir) that gets
 * its owner, mode and metadata and only then is renamed over the target, so a failed or aborted
 * upload (a full disk included) leaves neither a partial file nor a temp file behind. The source
 * is only taken once the target checked out.
 */
export async function writeFileAs(
  target: string,
  source: () => Readable,
  user: User,
  metadata: Record<string, string>,
  logger: Logger,
): Promise<WrittenFile> {
  const access = accessFor(user);
  const dest = await resolveTarget(target, access);
  const dir = path.dirname(dest);
  const name = path.basename(dest);
  let held: HeldDir;
  try {
    held = await holdDir(dir, access, user);
  } catch (err) {
    throw toHTTPError(err, `error creating directory '${dir}'`);
  }
  const tmp = held.entry(`${UPLOAD_TEMP_PREFIX}${randomBytes(8).toString("hex")}`);
  let file: FileHandle | undefined;
  try {
    const existing = await lstat(held.entry(name)).catch((err: NodeJS.ErrnoException) => {
      if (err.code === "ENOENT") return undefined;
      throw err;
    });
    if (existing?.isDirectory()) throw new HTTPError(400, `path '${target}' is a directory`);
    if (existing && !existing.isFile()) {
      // A dangling symlink (whose target a root write would create anywhere) or a file swapped
      // for something else since it was looked at.
      throw new HTTPError(400, `path '${target}' is not a regular file`);
    }
    if (existing) access.requireOn(existing, WRITE, target);
    else await access.requireOpened(held.handle, WRITE | SEARCH);

    file = await open(tmp, "wx", NEW_FILE_MODE);
    if (isRoot) await file.chown(existing?.uid ?? user.uid, existing?.gid ?? user.gid);
    if (existing) await file.chmod(existing.mode & 0o7777);
    // The xattr calls do not follow a final symlink: should the user swap the temp name for one
    // (it is in a directory they may write), they fail instead of tagging another file.
    if (Object.keys(metadata).length > 0) await storeMetadata(tmp, metadata, logger);
    const persisted = await readMetadata(tmp);
    const out = file.createWriteStream({ highWaterMark: WRITE_BUFFER_BYTES });
    file = undefined; // the stream closes it, once finished or failed
    await pump(source(), out);
    await rename(tmp, held.entry(name));
    const entry: WrittenFile = { path: target, name: path.basename(target), type: "file" };
    if (Object.keys(persisted).length > 0) entry.metadata = persisted;
    return entry;
  } catch (err) {
    await file?.close().catch(() => {});
    await rm(tmp, { force: true }).catch(() => {});
    if (isDecompressionError(err)) {
      throw new HTTPError(400, `error decompressing request body: ${(err as Error).message}`);
    }
    throw toHTTPError(err, `error writing file '${target}'`);
  } finally {
    await held.close();
  }
}

/** Writes metadata xattrs; a filesystem without user xattrs only loses the metadata, as in envd. */
async function storeMetadata(file: string, metadata: Record<string, string>, logger: Logger): Promise<void> {
  try {
    await writeMetadata(file, metadata);
  } catch (err) {
    const errno = Number(/os error (\d+)/.exec((err as Error).message)?.[1]);
    if (errno === 95) {
      logger.warn({ file }, "filesystem does not support xattrs; metadata not stored");
      return;
    }
    if (errno === 28 || errno === 122 || errno === 7) {
      throw new HTTPError(507, "not enough space for file metadata", { cause: err });
    }
    throw new HTTPError(500, `error writing file metadata: ${(err as Error).message}`, { cause: err });
  }
}
