/**
 * Turns "something happened to these paths" into envd's filesystem events. Node's fs.watch only
 * says `rename` (a name appeared or went away) or `change` (content or attributes), so the watcher
 * keeps a snapshot of every entry it knows and compares it with a fresh lstat of each path named
 * by a batch of notifications. Pure functions, so the rules can be tested without a filesystem.
 */
import type { BigIntStats } from "node:fs";
import { EventType } from "@moat/shared/gen/envd/filesystem";

const S_IFMT = 0o170000;
const S_IFREG = 0o100000;
const S_IFDIR = 0o040000;

/** What the watcher remembers about an entry. */
export interface Snapshot {
  dev: bigint;
  ino: bigint;
  mode: number;
  uid: number;
  gid: number;
  size: bigint;
  mtimeNs: bigint;
  ctimeNs: bigint;
}

export function snapshotOf(st: BigIntStats): Snapshot {
  return {
    dev: st.dev,
    ino: st.ino,
    mode: Number(st.mode),
    uid: Number(st.uid),
    gid: Number(st.gid),
    size: st.size,
    mtimeNs: st.mtimeNs,
    ctimeNs: st.ctimeNs,
  };
}

export function isDirectory(snap: Snapshot): boolean {
  return (snap.mode & S_IFMT) === S_IFDIR;
}

export function isRegularFile(snap: Snapshot): boolean {
  return (snap.mode & S_IFMT) === S_IFREG;
}

function inodeKey(snap: Snapshot): string {
  return `${snap.dev}:${snap.ino}`;
}

function sameInode(a: Snapshot, b: Snapshot): boolean {
  return a.dev === b.dev && a.ino === b.ino;
}

/**
 * Events for an entry that kept its inode: WRITE when a regular file's size or mtime moved, CHMOD
 * when its mode or owner changed or only its ctime moved (xattrs, a no-op chown). A directory's
 * mtime moves whenever its children change, which its own watch reports, so it never gets WRITE.
 */
export function changeEvents(prev: Snapshot, cur: Snapshot): EventType[] {
  const events: EventType[] = [];
  const mtimeMoved = prev.mtimeNs !== cur.mtimeNs;
  if (isRegularFile(cur) && (mtimeMoved || prev.size !== cur.size)) events.push(EventType.WRITE);
  const attributes = prev.mode !== cur.mode || prev.uid !== cur.uid || prev.gid !== cur.gid;
  if (attributes || (prev.ctimeNs !== cur.ctimeNs && !mtimeMoved)) events.push(EventType.CHMOD);
  return events;
}

/** One path named by a batch of notifications: what the snapshot held and what lstat sees now. */
export interface Observation {
  path: string;
  prev: Snapshot | undefined;
  cur: Snapshot | undefined;
  /** Whether a `rename` notification named it (so a name that came and went is worth reporting). */
  renamed: boolean;
}

export interface Classified {
  path: string;
  events: EventType[];
  /** For a name that appeared because an entry was moved here from another path of the batch. */
  movedFrom?: string;
}

/**
 * Classifies a batch, in the order the paths were first named. An inode that vanished from one
 * path and appeared at another within the batch is a move: RENAME for the old path, CREATE for
 * the new one (as inotify-based envd reports it). Otherwise a vanished entry is REMOVE, a new one
 * CREATE, and a name whose inode was replaced is REMOVE then CREATE, or only CREATE when it was
 * the target of a move. A regular file that appears with content also gets WRITE: its writes may
 * be folded into the same lstat, or it was written elsewhere and renamed into place. A name that
 * appeared and vanished between two looks is CREATE, REMOVE.
 */
export function classifyBatch(batch: Observation[]): Classified[] {
  const vanished = new Map<string, string>();
  const appeared = new Map<string, string>();
  for (const o of batch) {
    if (o.prev && (!o.cur || !sameInode(o.prev, o.cur))) vanished.set(inodeKey(o.prev), o.path);
    if (o.cur && (!o.prev || !sameInode(o.prev, o.cur))) appeared.set(inodeKey(o.cur), o.path);
  }
  const movedElsewhere = (snap: Snapshot, from: string) => {
    const to = appeared.get(inodeKey(snap));
    return to !== undefined && to !== from;
  };

  const out: Classified[] = [];
  for (const { path, prev, cur, renamed } of batch) {
    if (!prev && !cur) {
      if (renamed) out.push({ path, events: [EventType.CREATE, EventType.REMOVE] });
      continue;
    }
    if (prev && !cur) {
      out.push({ path, events: [movedElsewhere(prev, path) ? EventType.RENAME : EventType.REMOVE] });
      continue;
    }
    if (prev && cur && sameInode(prev, cur)) {
      const events = changeEvents(prev, cur);
      if (events.length > 0) out.push({ path, events });
      continue;
    }
    // A new inode at this name.
    const source = vanished.get(inodeKey(cur!));
    const movedFrom = source !== undefined && source !== path ? source : undefined;
    const events: EventType[] = [];
    if (prev) {
      if (movedElsewhere(prev, path)) events.push(EventType.RENAME);
      else if (!movedFrom) events.push(EventType.REMOVE);
    }
    events.push(EventType.CREATE);
    // Content arrived at this name, also when it arrived by rename (uploads land that way):
    // clients wait for WRITE on the path they wrote.
    if (isRegularFile(cur!) && cur!.size > 0n) events.push(EventType.WRITE);
    out.push(movedFrom ? { path, events, movedFrom } : { path, events });
  }
  return out;
}
