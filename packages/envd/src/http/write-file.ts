import { randomBytes } from "node:crypto";
import { createWriteStream } from "node:fs";
import { chmod, realpath, rename, rm, stat } from "node:fs/promises";
import path from "node:path";
import type { Readable } from "node:stream";
import type { Logger } from "@moat/shared";
import type { User } from "../auth/users.js";
import { readMetadata, writeMetadata } from "../fs/metadata.js";
import { chownTo, makeDirsAs } from "../fs/ownership.js";
import { UPLOAD_TEMP_PREFIX } from "../fs/upload-temp.js";
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

/**
 * Checks that `target` can be written as a file and returns where the bytes go: the target itself,
 * or for an existing file its resolved path (so a symlink keeps pointing at the new content) and
 * mode (so overwriting a script keeps it executable).
 */
export async function prepareTarget(target: string): Promise<{ dest: string; mode?: number }> {
  let stats: Awaited<ReturnType<typeof stat>>;
  try {
    stats = await stat(target);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === "ENOENT") return { dest: target };
    if (code === "ENOTDIR") throw new HTTPError(400, `path '${target}': a parent is not a directory`);
    throw toHTTPError(err, `error checking path '${target}'`);
  }
  if (stats.isDirectory()) throw new HTTPError(400, `path '${target}' is a directory`);
  if (!stats.isFile()) throw new HTTPError(400, `path '${target}' is not a regular file`);
  return { dest: await realpath(target), mode: stats.mode & 0o7777 };
}

/**
 * Streams `source()` into `target` on behalf of `user` (the source is only taken once the target
 * checked out). Missing parents are created as the user; the bytes go to a temp file in the
 * destination's directory that is chowned, tagged with the metadata and only then renamed over
 * the target, so a failed or aborted upload leaves neither a partial file nor a temp file behind.
 */
export async function writeFileAs(
  target: string,
  source: () => Readable,
  user: User,
  metadata: Record<string, string>,
  logger: Logger,
): Promise<WrittenFile> {
  const { dest, mode } = await prepareTarget(target);
  const dir = path.dirname(dest);
  try {
    await makeDirsAs(dir, user);
  } catch (err) {
    throw toHTTPError(err, `error creating directory '${dir}'`);
  }
  const tmp = path.join(dir, `${UPLOAD_TEMP_PREFIX}${randomBytes(8).toString("hex")}`);
  try {
    await pump(
      source(),
      createWriteStream(tmp, { flags: "wx", mode: NEW_FILE_MODE, highWaterMark: WRITE_BUFFER_BYTES }),
    );
    await chownTo(tmp, user);
    if (mode !== undefined) await chmod(tmp, mode);
    if (Object.keys(metadata).length > 0) await storeMetadata(tmp, metadata, logger);
    await rename(tmp, dest);
  } catch (err) {
    await rm(tmp, { force: true }).catch(() => {});
    if (isDecompressionError(err)) {
      throw new HTTPError(400, `error decompressing request body: ${(err as Error).message}`);
    }
    throw toHTTPError(err, `error writing file '${target}'`);
  }
  const entry: WrittenFile = { path: target, name: path.basename(target), type: "file" };
  const persisted = await readMetadata(dest);
  if (Object.keys(persisted).length > 0) entry.metadata = persisted;
  return entry;
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
