/**
 * File metadata (the SDK's `metadata` of writes, stats and lists). As in E2B's envd it lives in
 * extended attributes `user.e2b.<key>`, so `setfattr`/`getfattr` inside the sandbox see the same.
 *
 * gVisor before release-20260520 refuses setxattr, listxattr and removexattr on every file of its
 * gofer mounts (the root and /tmp of a sandbox) with EOPNOTSUPP, whatever the host filesystem
 * allows. There envd keeps the metadata itself, in a table in its own memory (which a pause, a
 * snapshot or a fork saves with the sandbox), keyed by the file's path and checked against its
 * inode: metadata follows envd's own moves and removes, and is dropped once the path holds
 * another file (a process renamed another file over it, as editors save). It does not follow a
 * file that a process moves, and a file a process deletes and creates again under the same name
 * may keep it when the host filesystem hands out the freed inode number again.
 */
import type { Stats } from "node:fs";
import { lstat, realpath } from "node:fs/promises";
import path from "node:path";

/** The xattr namespace of metadata, as in E2B's envd. */
export const METADATA_XATTR_PREFIX = "user.e2b.";

/** Files the table keeps metadata for at most (about 4 KiB each at most, see upload-metadata.ts). */
export const MAX_TABLE_FILES = 50_000;

/** The native xattr binding, loaded on first use to keep it off envd's startup path. */
let binding: Promise<typeof import("@napi-rs/xattr")> | undefined;
function xattr() {
  binding ??= import("@napi-rs/xattr");
  return binding;
}

/** What the table holds for a path: the inode it was set on and the metadata. */
interface Kept {
  dev: number;
  ino: number;
  /** The inode numbering the dev/ino are from (see forgetInodeNumbers). */
  numbering: number;
  metadata: Record<string, string>;
}

const table = new Map<string, Kept>();
let numbering = 0;

/** An errno error from the xattr binding ("… (os error 95)"), or from Node. */
function errnoOf(err: unknown): number | undefined {
  const errno = (err as NodeJS.ErrnoException).errno;
  if (typeof errno === "number") return Math.abs(errno);
  const match = /os error (\d+)/.exec((err as Error).message ?? "");
  return match ? Number(match[1]) : undefined;
}

/** Whether an xattr call failed because the filesystem has no user xattrs (EOPNOTSUPP). */
export function xattrsUnsupported(err: unknown): boolean {
  return errnoOf(err) === 95;
}

/** Whether an xattr call failed for lack of space (ENOSPC, EDQUOT, E2BIG). */
export function xattrsFull(err: unknown): boolean {
  const errno = errnoOf(err);
  return errno === 28 || errno === 122 || errno === 7;
}

/**
 * The table's key of a path: its directory resolved, so that a file reached through a symlinked
 * directory is the same file. The name itself is kept (a symlink is not a file with metadata).
 */
async function tableKey(file: string): Promise<string> {
  const dir = path.dirname(path.resolve(file));
  return path.join(await realpath(dir).catch(() => dir), path.basename(file));
}

/**
 * A checkpoint is about to be taken: a restored gVisor numbers inodes anew, so the inodes
 * recorded so far cannot tell files apart any more. Each entry takes the inode its path holds
 * when it is next read.
 */
export function forgetInodeNumbers(): void {
  numbering++;
}

/** The metadata of a file: empty when it has none. `stats`: its lstat, when the caller has it. */
export async function readMetadata(file: string, stats?: Stats): Promise<Record<string, string>> {
  const { getAttribute, listAttributes } = await xattr();
  let names: string[];
  try {
    names = await listAttributes(file);
  } catch (err) {
    return xattrsUnsupported(err) ? readTable(file, stats) : {};
  }
  const out: Record<string, string> = {};
  for (const name of names) {
    if (!name.startsWith(METADATA_XATTR_PREFIX)) continue;
    try {
      const value = await getAttribute(file, name);
      if (value) out[name.slice(METADATA_XATTR_PREFIX.length)] = Buffer.from(value).toString("utf8");
    } catch {
      // removed between list and get
    }
  }
  // gVisor answers listxattr with an empty list where it does not support it (as Linux does).
  return Object.keys(out).length > 0 ? out : readTable(file, stats);
}

async function readTable(file: string, stats?: Stats): Promise<Record<string, string>> {
  if (table.size === 0) return {};
  const key = await tableKey(file);
  const kept = table.get(key);
  if (!kept) return {};
  const now = stats ?? (await lstat(file).catch(() => undefined));
  if (!now?.isFile() || (kept.numbering === numbering && (kept.dev !== now.dev || kept.ino !== now.ino))) {
    table.delete(key);
    return {};
  }
  if (kept.numbering !== numbering) Object.assign(kept, { dev: now.dev, ino: now.ino, numbering });
  return { ...kept.metadata };
}

/**
 * Replaces all metadata of `file` (a regular file, not a symlink: the xattr calls do not follow a
 * final symlink) with `metadata`; empty removes it. `inode`: the file as the caller opened it,
 * which the table records. A full xattr block is an error xattrsFull recognizes, a full table
 * ENOSPC.
 */
export async function replaceMetadata(
  file: string,
  metadata: Record<string, string>,
  inode: { dev: number; ino: number },
): Promise<void> {
  const { listAttributes, removeAttribute, setAttribute } = await xattr();
  try {
    for (const name of await listAttributes(file)) {
      if (name.startsWith(METADATA_XATTR_PREFIX)) await removeAttribute(file, name);
    }
    for (const [key, value] of Object.entries(metadata)) {
      await setAttribute(file, METADATA_XATTR_PREFIX + key, Buffer.from(value, "utf8"));
    }
    // Clearing "succeeds" where listxattr answers an empty list for want of support.
    if (table.size > 0) table.delete(await tableKey(file));
    return;
  } catch (err) {
    if (!xattrsUnsupported(err)) throw err;
  }
  const key = await tableKey(file);
  if (!table.has(key) && table.size >= MAX_TABLE_FILES) await sweepTable();
  if (!table.has(key) && table.size >= MAX_TABLE_FILES) {
    throw Object.assign(new Error(`metadata is kept for ${MAX_TABLE_FILES} files at most in this sandbox`), {
      code: "ENOSPC",
    });
  }
  table.set(key, { dev: inode.dev, ino: inode.ino, numbering, metadata: { ...metadata } });
}

/** Drops the entries whose path no longer holds their file. */
async function sweepTable(): Promise<void> {
  for (const [key, kept] of table) {
    const now = await lstat(key).catch(() => undefined);
    if (!now?.isFile() || (kept.numbering === numbering && (kept.dev !== now.dev || kept.ino !== now.ino))) {
      table.delete(key);
    }
  }
}

/** The table's keys of `target` and of everything below it. */
function keysUnder(key: string): string[] {
  const prefix = key.endsWith("/") ? key : `${key}/`;
  return [...table.keys()].filter((k) => k === key || k.startsWith(prefix));
}

/**
 * Table bookkeeping around envd's own rename of `source` to `destination` (a file or a directory):
 * call before the rename, then call what it returns after it succeeded. Real xattrs move with
 * their inode by themselves.
 */
export async function prepareMove(source: string, destination: string): Promise<() => Promise<void>> {
  if (table.size === 0) return async () => {};
  const from = await tableKey(source);
  return async () => {
    const to = await tableKey(destination);
    for (const key of keysUnder(to)) table.delete(key);
    for (const key of keysUnder(from)) {
      const kept = table.get(key)!;
      table.delete(key);
      table.set(to + key.slice(from.length), kept);
    }
  };
}

/** Table bookkeeping after envd removed `target` (and whatever was below it). */
export async function forgetRemoved(target: string): Promise<void> {
  if (table.size === 0) return;
  for (const key of keysUnder(await tableKey(target))) table.delete(key);
}
