import { randomBytes } from "node:crypto";
import { constants, type Stats } from "node:fs";
import { type FileHandle, lstat, open, realpath, rename, rm, stat, unlink } from "node:fs/promises";
import path from "node:path";
import type { Readable } from "node:stream";
import type { Logger } from "@moat/shared";
import type { User } from "../auth/users.js";
import { type HeldDir, holdDir } from "../fs/held-dir.js";
import { replaceMetadata, xattrsFull } from "../fs/metadata.js";
import { UPLOAD_TEMP_PREFIX } from "../fs/upload-temp.js";
import { type Access, accessFor, SEARCH, WRITE } from "../services/filesystem/access.js";
import { holdEvents, settleWatchers } from "../services/filesystem/dir-watcher.js";
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

/** How writeFileAs writes. */
export interface WriteOptions {
  /**
   * Write a new file beside the target and rename it over the target once complete (compose, as
   * E2B's compose does): readers never see it half-written, but it is a new inode. Otherwise the
   * existing file is truncated and written in place, as E2B's upload does.
   */
  replace?: boolean;
}

/**
 * Streams `source()` into `target` on behalf of `user`, with the user's permissions: writing over
 * an existing file needs write permission on it (it keeps its owner and mode), creating one needs
 * write permission on the directory (it is the user's). Missing parents are created as the user.
 * Everything happens inside the destination's directory held open (see HeldDir), on the inode
 * that was opened and checked. The source is only taken once the target checked out.
 *
 * In place (the default): an existing file keeps its inode (open handles and hard links see the
 * new content, watchers see CHMOD then WRITE, a new file CREATE, CHMOD, WRITE, reported before
 * this returns). An upload that fails after the truncation leaves the file with what was written
 * so far, as in E2B (the error says so); a new file that fails is removed.
 */
export async function writeFileAs(
  target: string,
  source: () => Readable,
  user: User,
  metadata: Record<string, string>,
  logger: Logger,
  options: WriteOptions = {},
): Promise<WrittenFile> {
  const access = accessFor(user);
  const dest = await resolveTarget(target, access);
  let held: HeldDir;
  try {
    held = await holdDir(path.dirname(dest), access, user);
  } catch (err) {
    throw toHTTPError(err, `error creating directory '${path.dirname(dest)}'`);
  }
  try {
    const write = options.replace ? replaceFile : writeInPlace;
    await write({ held, name: path.basename(dest), target, dest, source, user, access, metadata, logger });
    const entry: WrittenFile = { path: target, name: path.basename(target), type: "file" };
    if (Object.keys(metadata).length > 0) entry.metadata = { ...metadata };
    return entry;
  } catch (err) {
    if (isDecompressionError(err)) {
      throw new HTTPError(400, `error decompressing request body: ${(err as Error).message}`);
    }
    throw toHTTPError(err, `error writing file '${target}'`);
  } finally {
    await held.close();
  }
}

interface WriteJob {
  held: HeldDir;
  /** The destination's name in `held`. */
  name: string;
  /** The path as requested (for messages) and as resolved (for watchers). */
  target: string;
  dest: string;
  source: () => Readable;
  user: User;
  access: Access;
  metadata: Record<string, string>;
  logger: Logger;
}

async function writeInPlace(job: WriteJob): Promise<void> {
  const { held, name, target, dest, user } = job;
  const entry = held.entry(name);
  const { file, created } = await openForWriting(job);
  let stats: Stats | undefined;
  let truncated = false;
  let streaming = false;
  let release = () => {};
  try {
    stats = await file.stat();
    if (created) await settleWatchers(dest);
    // Before writing, as E2B's envd does (watchers see CHMOD): a new file becomes the user's, an
    // existing one keeps its owner. Unprivileged (tests), envd can only "chown" its own files.
    const [uid, gid] = created ? [user.uid, user.gid] : [stats.uid, stats.gid];
    await file.chown(uid, gid).catch((err) => {
      if (isRoot) throw err;
    });
    await setMetadata(entry, stats, job.metadata, job.logger);
    await settleWatchers(dest);
    release = await holdEvents(dest);
    if (!created) {
      await file.truncate(0);
      truncated = true;
    }
    const out = file.createWriteStream({ highWaterMark: WRITE_BUFFER_BYTES, start: 0 });
    streaming = true; // the stream closes the file, once finished or failed
    await pump(job.source(), out);
    release();
    await settleWatchers(dest);
  } catch (err) {
    release();
    if (!streaming) await file.close().catch(() => {});
    if (created && stats) await removeIfStill(entry, stats);
    if (truncated) throw partlyWritten(err, target);
    throw err;
  }
}

/**
 * Opens the destination for writing: an existing regular file the user may write (checked on the
 * inode opened: O_NOFOLLOW refuses a symlink swapped in since the look), else a new file created
 * exclusively. Anything else is 400.
 */
async function openForWriting(job: WriteJob): Promise<{ file: FileHandle; created: boolean }> {
  const { held, name, target, access } = job;
  const entry = held.entry(name);
  // Twice: a file created or removed by someone else between the look and the open.
  for (let attempt = 0; attempt < 2; attempt++) {
    const existing = await lstatIfAny(entry);
    if (!existing) {
      await access.requireOpened(held.handle, WRITE | SEARCH);
      try {
        const flags = constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW;
        return { file: await open(entry, flags, NEW_FILE_MODE), created: true };
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === "EEXIST") continue;
        throw err;
      }
    }
    checkRegular(existing, target);
    let file: FileHandle;
    try {
      // O_NONBLOCK: a FIFO swapped in must not hang the open.
      file = await open(entry, constants.O_WRONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "ENOENT") continue;
      throw err;
    }
    try {
      const opened = await file.stat();
      checkRegular(opened, target);
      access.requireOn(opened, WRITE, target);
    } catch (err) {
      await file.close();
      throw err;
    }
    return { file, created: false };
  }
  throw new HTTPError(409, `path '${target}' was created and removed while it was being written; try again`);
}

/**
 * The E2B way of the old design: the bytes go to a temp file in the destination's directory that
 * gets its owner, mode and metadata and only then is renamed over the target, so a failed or
 * aborted write (a full disk included) leaves neither a partial file nor a temp file behind.
 */
async function replaceFile(job: WriteJob): Promise<void> {
  const { held, name, target, user, access } = job;
  const tmp = held.entry(`${UPLOAD_TEMP_PREFIX}${randomBytes(8).toString("hex")}`);
  let file: FileHandle | undefined;
  try {
    const existing = await lstatIfAny(held.entry(name));
    if (existing) checkRegular(existing, target);
    if (existing) access.requireOn(existing, WRITE, target);
    else await access.requireOpened(held.handle, WRITE | SEARCH);

    file = await open(tmp, "wx", NEW_FILE_MODE);
    if (isRoot) await file.chown(existing?.uid ?? user.uid, existing?.gid ?? user.gid);
    if (existing) await file.chmod(existing.mode & 0o7777);
    if (Object.keys(job.metadata).length > 0)
      await setMetadata(tmp, await file.stat(), job.metadata, job.logger);
    const out = file.createWriteStream({ highWaterMark: WRITE_BUFFER_BYTES });
    file = undefined; // the stream closes it, once finished or failed
    await pump(job.source(), out);
    await rename(tmp, held.entry(name));
  } catch (err) {
    await file?.close().catch(() => {});
    await rm(tmp, { force: true }).catch(() => {});
    throw err;
  }
}

/** The entry's lstat, or undefined when there is none. */
async function lstatIfAny(entry: string): Promise<Stats | undefined> {
  try {
    return await lstat(entry);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw err;
  }
}

/** A directory, a dangling symlink (whose target a root write would create anywhere) or a device is 400. */
function checkRegular(stats: Stats, target: string): void {
  if (stats.isDirectory()) throw new HTTPError(400, `path '${target}' is a directory`);
  if (!stats.isFile()) throw new HTTPError(400, `path '${target}' is not a regular file`);
}

/** Removes a file this upload created, unless the name holds another file by now. */
async function removeIfStill(entry: string, created: Stats): Promise<void> {
  const now = await lstatIfAny(entry).catch(() => undefined);
  if (now && now.dev === created.dev && now.ino === created.ino) await unlink(entry).catch(() => {});
}

/** A failure after an existing file was truncated: the error says what the file holds now. */
function partlyWritten(err: unknown, target: string): HTTPError {
  const http = isDecompressionError(err)
    ? new HTTPError(400, `error decompressing request body: ${(err as Error).message}`)
    : toHTTPError(err, `error writing file '${target}'`);
  return new HTTPError(
    http.status,
    `${http.message}; '${target}' was overwritten in place and holds only what was written before the failure: write it again`,
    { cause: err },
  );
}

/**
 * Replaces the metadata of the file at `entry` (which `stats` describes, as opened). The xattr
 * calls do not follow a final symlink: should the user swap the name for one meanwhile (it is in
 * a directory they may write), they fail instead of tagging another file.
 */
async function setMetadata(
  entry: string,
  stats: Stats,
  metadata: Record<string, string>,
  logger: Logger,
): Promise<void> {
  try {
    await replaceMetadata(entry, metadata, stats);
  } catch (err) {
    if (xattrsFull(err) || (err as NodeJS.ErrnoException).code === "ENOSPC") {
      throw new HTTPError(507, `not enough space for file metadata: ${(err as Error).message}`, {
        cause: err,
      });
    }
    logger.warn({ err, file: entry }, "writing file metadata failed");
    throw new HTTPError(500, `error writing file metadata: ${(err as Error).message}`, { cause: err });
  }
}
