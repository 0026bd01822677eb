/**
 * Permission checks for filesystem RPCs. envd runs as root, so the kernel lets it touch anything;
 * a request made as another user is held to what that user could do itself: the classic
 * owner/group/other mode bits (with supplementary groups from /etc/group), search permission on
 * every directory along a path, and the sticky-bit rule for unlinking and renaming. POSIX ACLs and
 * capabilities are not considered.
 */
import { readFileSync, type Stats, statSync } from "node:fs";
import { type FileHandle, lstat, readdir, readlink, realpath, stat } from "node:fs/promises";
import path from "node:path";
import { Code, ConnectError } from "@connectrpc/connect";
import type { User } from "../../auth/users.js";

export const READ = 4;
export const WRITE = 2;
export const SEARCH = 1;

const S_ISVTX = 0o1000;
const S_IFMT = 0o170000;
const S_IFDIR = 0o040000;

/** Who asks: a uid and every gid that counts for group permission bits. */
export interface Principal {
  uid: number;
  gids: ReadonlySet<number>;
}

/** The parts of a stat result that permission decisions look at. */
export interface Owned {
  mode: number;
  uid: number;
  gid: number;
}

/**
 * Whether `who` has every bit of `want` on an inode. Exactly one class applies, as in the kernel:
 * the owner bits for the owner even when "other" is more generous, else the group bits for a
 * member, else the other bits. uid 0 may do anything.
 */
export function permits(inode: Owned, who: Principal, want: number): boolean {
  if (who.uid === 0) return true;
  let bits: number;
  if (inode.uid === who.uid) bits = (inode.mode >> 6) & 7;
  else if (who.gids.has(inode.gid)) bits = (inode.mode >> 3) & 7;
  else bits = inode.mode & 7;
  return (bits & want) === want;
}

/** In a sticky directory only the entry's owner, the directory's owner or root may unlink or rename it. */
export function stickyAllows(dir: Owned, entry: Owned, who: Principal): boolean {
  if ((dir.mode & S_ISVTX) === 0 || who.uid === 0) return true;
  return entry.uid === who.uid || dir.uid === who.uid;
}

const envdIsRoot = process.getuid?.() === 0;

/**
 * The checks a request is held to. When envd itself is not root the kernel already applies
 * envd's own permissions, and for root requests there is nothing to check: both get the no-op.
 */
export function accessFor(user: User): Access {
  if (!envdIsRoot || user.uid === 0) return UNCHECKED;
  return new CheckedAccess({ uid: user.uid, gids: groupsOf(user) });
}

export interface Access {
  /** Search permission on `dir` and every directory above it (what resolving a path inside it needs). */
  requireSearch(dir: string): Promise<void>;
  /** `want` on the directory `dir` (which must exist), plus search permission down to it. */
  requireDir(dir: string, want: number): Promise<void>;
  /** Whether the user may list `dir`; used to skip subtrees they cannot read. */
  mayList(dir: string): Promise<boolean>;
  /** What creating `target` (and any missing parents) needs: write and search on its nearest existing ancestor. */
  requireCreate(target: string): Promise<void>;
  /** What unlinking or renaming away `target` needs: write on its parent and the sticky-bit rule. */
  requireUnlink(target: string): Promise<void>;
  /** What `rm -rf target` needs, checked for the whole tree before anything is removed. */
  requireRemoveTree(target: string): Promise<void>;
  /** What renaming `source` to `destination` needs, the destination's parent existing or not. */
  requireMove(source: string, destination: string): Promise<void>;
  /**
   * What using an opened file or directory needs: `want` on the inode itself, and search on every
   * directory above where it really is, as its descriptor tells whatever symlinks led there or
   * were swapped in since the path was checked. Returns its stats.
   */
  requireOpened(handle: FileHandle, want: number): Promise<Stats>;
  /** `want` on an inode already looked at (`what` names it in the error). */
  requireOn(inode: Owned, want: number, what: string): void;
  /** What unlinking `entry` from the opened directory `dir` needs: write on it and the sticky-bit rule. */
  requireUnlinkIn(dir: FileHandle, entry: Owned, what: string): Promise<void>;
}

const UNCHECKED: Access = {
  requireSearch: async () => {},
  requireDir: async () => {},
  mayList: async () => true,
  requireCreate: async () => {},
  requireUnlink: async () => {},
  requireRemoveTree: async () => {},
  requireMove: async () => {},
  requireOpened: (handle) => handle.stat(),
  requireOn: () => {},
  requireUnlinkIn: async () => {},
};

class CheckedAccess implements Access {
  constructor(private readonly who: Principal) {}

  async requireSearch(dir: string): Promise<void> {
    // The kernel searches every directory it walks through: the ones the path names (symlinks
    // followed) and those along the targets of symlinks on the way, which the real path covers.
    const dirs = new Set([...prefixes(dir)]);
    try {
      for (const d of prefixes(await realpath(dir))) dirs.add(d);
    } catch {
      // Missing: the operation itself reports it.
    }
    for (const d of dirs) {
      let st: Owned;
      try {
        st = await stat(d);
      } catch {
        continue;
      }
      // Not a directory: the operation itself fails with ENOTDIR.
      if ((st.mode & S_IFMT) !== S_IFDIR) continue;
      if (!permits(st, this.who, SEARCH)) throw denied(d);
    }
  }

  async requireDir(dir: string, want: number): Promise<void> {
    await this.requireSearch(path.dirname(dir));
    const st = await stat(dir);
    if ((st.mode & S_IFMT) !== S_IFDIR) {
      throw Object.assign(new Error(`'${dir}' is not a directory`), { code: "ENOTDIR" });
    }
    if (!permits(st, this.who, want)) throw denied(dir);
  }

  async mayList(dir: string): Promise<boolean> {
    try {
      return permits(await stat(dir), this.who, READ | SEARCH);
    } catch {
      return false;
    }
  }

  async requireCreate(target: string): Promise<void> {
    const ancestor = await nearestExisting(path.dirname(target));
    await this.requireDir(ancestor, WRITE | SEARCH);
  }

  async requireUnlink(target: string): Promise<void> {
    const parent = path.dirname(target);
    await this.requireDir(parent, WRITE | SEARCH);
    const [dirStats, entryStats] = await Promise.all([stat(parent), lstat(target)]);
    if (!stickyAllows(dirStats, entryStats, this.who)) throw denied(target);
  }

  async requireRemoveTree(target: string): Promise<void> {
    await this.requireUnlink(target);
    const st = await lstat(target);
    if ((st.mode & S_IFMT) === S_IFDIR) await this.requireEmptiable(target, st);
  }

  /** `rm -r` reads and empties every directory of the tree: each needs read, write and search. */
  private async requireEmptiable(dir: string, dirStats: Owned): Promise<void> {
    if (!permits(dirStats, this.who, READ | WRITE | SEARCH)) throw denied(dir);
    const sticky = (dirStats.mode & S_ISVTX) !== 0;
    for (const entry of await readdir(dir, { withFileTypes: true })) {
      if (!sticky && !entry.isDirectory()) continue;
      const child = path.join(dir, entry.name);
      let st: Owned;
      try {
        st = await lstat(child);
      } catch {
        continue;
      }
      if (!stickyAllows(dirStats, st, this.who)) throw denied(child);
      if (entry.isDirectory()) await this.requireEmptiable(child, st);
    }
  }

  async requireOpened(handle: FileHandle, want: number): Promise<Stats> {
    const st = await handle.stat();
    const where = await openedPath(handle);
    this.requireOn(st, want, where);
    for (const d of prefixes(path.dirname(where))) {
      let dir: Owned;
      try {
        dir = await stat(d);
      } catch {
        continue;
      }
      if (!permits(dir, this.who, SEARCH)) throw denied(d);
    }
    return st;
  }

  requireOn(inode: Owned, want: number, what: string): void {
    if (!permits(inode, this.who, want)) throw denied(what);
  }

  async requireUnlinkIn(dir: FileHandle, entry: Owned, what: string): Promise<void> {
    const dirStats = await this.requireOpened(dir, WRITE | SEARCH);
    if (!stickyAllows(dirStats, entry, this.who)) throw denied(what);
  }

  async requireMove(source: string, destination: string): Promise<void> {
    await this.requireUnlink(source);
    const destParent = path.dirname(destination);
    await this.requireCreate(destination);
    try {
      const existing = await lstat(destination);
      if (!stickyAllows(await stat(destParent), existing, this.who)) throw denied(destination);
    } catch (err) {
      if (err instanceof ConnectError) throw err;
    }
    // Moving a directory to another parent rewrites its `..` entry: that takes write on it.
    const src = await lstat(source);
    if ((src.mode & S_IFMT) === S_IFDIR && path.dirname(source) !== destParent) {
      if (!permits(src, this.who, WRITE)) throw denied(source);
    }
  }
}

/**
 * Where an open descriptor's file is now, from /proc (" (deleted)" stripped: unlinked since it
 * was opened). Without /proc the answer is unknown, and checks that need it fail closed.
 */
async function openedPath(handle: FileHandle): Promise<string> {
  let where: string;
  try {
    where = await readlink(`/proc/self/fd/${handle.fd}`);
  } catch (err) {
    throw new ConnectError(`cannot check where an opened file is: ${(err as Error).message}`, Code.Internal);
  }
  if (!where.startsWith("/")) throw new ConnectError(`'${where}' is not a file`, Code.InvalidArgument);
  return where.endsWith(" (deleted)") ? where.slice(0, -" (deleted)".length) : where;
}

function denied(target: string): ConnectError {
  return new ConnectError(`permission denied: '${target}'`, Code.PermissionDenied);
}

/** `/`, `/a`, `/a/b` for `/a/b`. */
function* prefixes(dir: string): Generator<string> {
  const abs = path.resolve(dir);
  yield "/";
  let current = "";
  for (const part of abs.split("/")) {
    if (!part) continue;
    current += `/${part}`;
    yield current;
  }
}

async function nearestExisting(dir: string): Promise<string> {
  for (let d = path.resolve(dir); ; d = path.dirname(d)) {
    try {
      await stat(d);
      return d;
    } catch {
      if (d === "/") return d;
    }
  }
}

const GROUP_FILE = "/etc/group";
let groupCache: { mtimeMs: number; members: Map<string, number[]> } | undefined;

/** The user's primary gid plus every group that lists them as a member. */
function groupsOf(user: User): Set<number> {
  const gids = new Set([user.gid]);
  let mtimeMs: number;
  try {
    mtimeMs = statSync(GROUP_FILE).mtimeMs;
  } catch {
    return gids;
  }
  if (groupCache?.mtimeMs !== mtimeMs) {
    const members = new Map<string, number[]>();
    for (const line of readFileSync(GROUP_FILE, "utf8").split("\n")) {
      const [, , gidText, list] = line.split(":");
      if (!gidText || !list) continue;
      for (const name of list.split(",")) {
        if (!name) continue;
        const own = members.get(name) ?? [];
        own.push(Number(gidText));
        members.set(name, own);
      }
    }
    groupCache = { mtimeMs, members };
  }
  for (const gid of groupCache.members.get(user.name) ?? []) gids.add(gid);
  return gids;
}
