import { constants, type Stats } from "node:fs";
import { type FileHandle, open, stat } from "node:fs/promises";
import path from "node:path";
import { type Access, READ } from "../services/filesystem/access.js";
import { HTTPError, toHTTPError } from "./errors.js";

/** An open regular file and its stats as of the open. */
export interface OpenedFile {
  handle: FileHandle;
  stats: Stats;
}

/**
 * Opens `target` for reading on behalf of a user, with their permissions: search on the path they
 * named, then read on the file actually opened and search on the directories where it really is,
 * so a symlink swapped in after the check leads nowhere they could not read themselves. 404 when
 * missing, 403 when not theirs to read, 400 for a directory or anything but a regular file.
 */
export async function openFileAs(target: string, access: Access): Promise<OpenedFile> {
  try {
    await access.requireSearch(path.dirname(target));
    requireRegularFile(target, await stat(target));
  } catch (err) {
    throw notFoundOr(err, target, "error checking path");
  }
  // O_NONBLOCK: should the path turn into a FIFO after the stat, opening it must not hang.
  let handle: FileHandle;
  try {
    handle = await open(target, constants.O_RDONLY | constants.O_NONBLOCK);
  } catch (err) {
    throw notFoundOr(err, target, "error opening file");
  }
  try {
    const stats = await access.requireOpened(handle, READ);
    requireRegularFile(target, stats);
    return { handle, stats };
  } catch (err) {
    await handle.close().catch(() => {});
    throw notFoundOr(err, target, "error opening file");
  }
}

function requireRegularFile(target: string, stats: Stats): void {
  if (stats.isDirectory()) throw new HTTPError(400, `path '${target}' is a directory`);
  if (!stats.isFile()) throw new HTTPError(400, `path '${target}' is not a regular file`);
}

function notFoundOr(err: unknown, target: string, what: string): HTTPError {
  const code = (err as NodeJS.ErrnoException).code;
  if (code === "ENOENT" || code === "ENOTDIR") return new HTTPError(404, `path '${target}' does not exist`);
  return toHTTPError(err, `${what} '${target}'`);
}
