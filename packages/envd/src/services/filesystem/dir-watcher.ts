/**
 * Watches a directory (and, when recursive, every directory below it) and reports envd's
 * filesystem events: CREATE, WRITE, REMOVE, RENAME, CHMOD with the path relative to the root.
 *
 * One non-recursive fs.watch (one inotify watch) per directory, as inotify-based envd does; Node's
 * own recursive mode puts a watch on every file and stats synchronously. Notifications only name
 * a child and say `rename` or `change`, so each directory keeps a snapshot of its entries, and the
 * notifications of one event-loop turn are coalesced per path and classified by comparing the
 * snapshot with a fresh lstat (see watch-events.ts). Batches run one at a time, so snapshots are
 * only ever touched by one batch.
 *
 * In recursive mode a new directory is watched before its CREATE is reported and then scanned, so
 * whatever the client does inside it after seeing the event is seen too, and whatever was created
 * in it before the watch was set up is reported as CREATE (and WRITE for content). A directory
 * moved within the tree is re-watched at its new path; its contents are compared with what was
 * known at the old path, so only changes made around the move are reported.
 */
import { type FSWatcher, watch } from "node:fs";
import { lstat, readdir, realpath, stat } from "node:fs/promises";
import path from "node:path";
import type { MessageInitShape } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import type { Logger } from "@moat/shared";
import { EventType, type FilesystemEventSchema } from "@moat/shared/gen/envd/filesystem";
import type { UserDirectory } from "../../auth/users.js";
import { fsError } from "../../errors.js";
import { entryInfo } from "../../fs/entry-info.js";
import { isUploadTemp } from "../../fs/upload-temp.js";
import { mapLimit } from "./concurrency.js";
import { classifyBatch, isDirectory, type Observation, type Snapshot, snapshotOf } from "./watch-events.js";

export type FilesystemEventInit = MessageInitShape<typeof FilesystemEventSchema>;

export interface DirWatcherOptions {
  /** Absolute path of the watched directory; event names are relative to it. */
  root: string;
  recursive: boolean;
  /** Attach an EntryInfo to CREATE, WRITE and CHMOD events when the path can still be stat'ed. */
  includeEntry: boolean;
  users: UserDirectory;
  logger: Logger;
  onEvent(event: FilesystemEventInit): void;
  /**
   * The watcher stopped by itself and nothing more will come: without an error when the watched
   * directory went away (after a REMOVE event named "."), with one when watching failed (the
   * inotify limit, say).
   */
  onEnd(err?: ConnectError): void;
}

interface WatchedDir {
  readonly path: string;
  readonly handle: FSWatcher;
  /** Child name → what it looked like when last seen. */
  readonly entries: Map<string, Snapshot>;
  closed: boolean;
}

/** What was known about a directory tree: relative directory path ("" for the top) → its entries. */
type Subtree = Map<string, Map<string, Snapshot>>;

interface Notification {
  dir: WatchedDir;
  name: string;
  renamed: boolean;
}

/** lstat calls in flight per batch or directory scan. */
const STAT_CONCURRENCY = 32;
/** For how many batches a path reported gone stays known as gone. */
const GONE_BATCHES = 3;

/** Every watcher running, for settleWatchers. */
const running = new Set<DirWatcher>();
/** Files envd is writing (paths with symlinks resolved), with how many writes each. */
const writing = new Map<string, number>();

/**
 * Holds back the notifications about `file` until the returned release is
 * called: while envd streams an upload into it, watchers report one WRITE when it is done rather
 * than one per chunk (inotify merges the unread IN_MODIFYs of a quick write the same way; the
 * truncation and the writes would otherwise be reported apart, depending on timing).
 */
export async function holdEvents(file: string): Promise<() => void> {
  if (running.size === 0) return () => {};
  const parent = path.dirname(file);
  const realFile = path.join(await realpath(parent).catch(() => parent), path.basename(file));
  writing.set(realFile, (writing.get(realFile) ?? 0) + 1);
  let released = false;
  return () => {
    if (released) return;
    released = true;
    const left = (writing.get(realFile) ?? 1) - 1;
    if (left > 0) writing.set(realFile, left);
    else writing.delete(realFile);
    for (const watcher of running) watcher.resume();
  };
}

/**
 * Resolves once every watcher that sees `file` has reported what was done to it so far, so that
 * a client that watches and then writes finds the events queued when the write returns (E2B's
 * inotify-based envd reports synchronously; the Python SDK polls right after a write). Costs
 * nothing when nobody watches there.
 */
export async function settleWatchers(file: string): Promise<void> {
  if (running.size === 0) return;
  const parent = path.dirname(file);
  const dir = await realpath(parent).catch(() => parent);
  const watching = [...running].filter((w) => w.sees(dir));
  if (watching.length === 0) return;
  // The notifications of a finished syscall are read in the loop's next poll phase at the latest.
  for (let i = 0; i < 2; i++) await new Promise((resolve) => setImmediate(resolve));
  await Promise.all(watching.map((w) => w.settled()));
}

export class DirWatcher {
  private readonly dirs = new Map<string, WatchedDir>();
  private pending: Notification[] = [];
  private flush: NodeJS.Immediate | undefined;
  /** The running scan or batch; the next one chains on it. */
  private work: Promise<void> = Promise.resolve();
  private closed = false;
  private batches = 0;
  /**
   * Paths reported gone, by batch number. inotify may name a path again in a later batch (the
   * IN_DELETE after the IN_ATTRIB of an unlink, the IN_DELETE of a create-and-delete): such a late
   * notification about a path that is still gone is a duplicate, not a new short-lived entry.
   */
  private readonly recentlyGone = new Map<string, number>();
  /** The watched directory with its symlinks resolved. */
  private realRoot = "";
  /** Identity of the watched directory, to tell when it is removed or replaced. */
  private rootInode: { dev: number; ino: number } | undefined;

  private constructor(private readonly options: DirWatcherOptions) {}

  /**
   * Watches `options.root`, which the caller has checked is a directory. Resolves once every
   * directory to watch has a watch and a snapshot, so events from then on are not missed.
   */
  static async start(options: DirWatcherOptions): Promise<DirWatcher> {
    const watcher = new DirWatcher(options);
    watcher.work = (async () => {
      const root = watcher.watchDir(options.root)!;
      const { dev, ino } = await stat(options.root);
      watcher.rootInode = { dev, ino };
      watcher.realRoot = await realpath(options.root);
      await watcher.scan(root, false);
    })();
    try {
      await watcher.work;
    } catch (err) {
      watcher.close();
      throw fsError(err, `watch '${options.root}'`);
    }
    running.add(watcher);
    return watcher;
  }

  /** Whether changes inside `realDir` (symlinks resolved) reach this watcher. */
  sees(realDir: string): boolean {
    if (realDir === this.realRoot) return true;
    return this.options.recursive && realDir.startsWith(this.realRoot === "/" ? "/" : `${this.realRoot}/`);
  }

  /** Whether a notification is about a file envd is writing. */
  private held(n: Notification): boolean {
    if (writing.size === 0) return false;
    const realDir = this.realRoot + n.dir.path.slice(this.options.root.length);
    return writing.has(path.join(realDir, n.name));
  }

  /** Processes what holdEvents held back, once released. */
  resume(): void {
    if (this.closed || this.pending.length === 0) return;
    this.flush ??= setImmediate(() => this.runBatch());
  }

  /** Resolves once the notifications received so far are reported. */
  async settled(): Promise<void> {
    while (!this.closed && this.flush !== undefined) {
      await new Promise((resolve) => setImmediate(resolve));
      await this.work.catch(() => {});
    }
    await this.work.catch(() => {});
  }

  /** Stops every watch; no event is reported after this returns. Idempotent. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    running.delete(this);
    if (this.flush) clearImmediate(this.flush);
    this.flush = undefined;
    this.pending = [];
    for (const dir of this.dirs.values()) this.unwatch(dir);
    this.dirs.clear();
  }

  /**
   * Sets up the watch of one directory; undefined when a subdirectory vanished or cannot be
   * watched (for the root, every failure is thrown).
   */
  private watchDir(dirPath: string): WatchedDir | undefined {
    const existing = this.dirs.get(dirPath);
    if (existing) return existing;
    let handle: FSWatcher;
    try {
      handle = watch(dirPath, { persistent: false });
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      // inotify reports its per-user watch and instance limits as ENOSPC and EMFILE.
      if (code === "ENOSPC" || code === "EMFILE") {
        throw new ConnectError(
          `cannot watch '${dirPath}': inotify watch limit reached`,
          Code.ResourceExhausted,
          undefined,
          undefined,
          err,
        );
      }
      if (dirPath === this.options.root) throw err;
      if (code === "ENOENT" || code === "ENOTDIR") return undefined;
      if (code === "EACCES" || code === "EPERM") {
        this.options.logger.warn({ dir: dirPath, err }, "watch: directory not watchable, skipped");
        return undefined;
      }
      throw err;
    }
    const dir: WatchedDir = { path: dirPath, handle, entries: new Map(), closed: false };
    handle.on("change", (eventType, filename) => {
      if (this.closed || dir.closed || filename === null) return;
      const name = filename.toString();
      if (isUploadTemp(name)) return;
      this.pending.push({ dir, name, renamed: eventType === "rename" });
      this.flush ??= setImmediate(() => this.runBatch());
    });
    handle.on("error", (err) => this.onWatchError(dir, err));
    this.dirs.set(dirPath, dir);
    return dir;
  }

  private unwatch(dir: WatchedDir): void {
    dir.closed = true;
    dir.handle.close();
  }

  /**
   * Stops watching `dirPath` and everything below it (it was removed or moved away), handing back
   * what was known about the subtree.
   */
  private dropTree(dirPath: string): Subtree {
    const known: Subtree = new Map();
    const prefix = `${dirPath}/`;
    for (const [p, dir] of this.dirs) {
      if (p === dirPath || p.startsWith(prefix)) {
        known.set(path.relative(dirPath, p), dir.entries);
        this.unwatch(dir);
        this.dirs.delete(p);
      }
    }
    return known;
  }

  private onWatchError(dir: WatchedDir, err: Error): void {
    if (this.closed || dir.closed) return;
    if (dir.path === this.options.root) {
      this.fail(new ConnectError(`watch of '${dir.path}' failed: ${err.message}`, Code.Internal));
      return;
    }
    this.options.logger.warn({ dir: dir.path, err }, "watch: directory watch failed, dropped");
    this.dropTree(dir.path);
  }

  private fail(err: unknown): void {
    if (this.closed) return;
    const connectErr = err instanceof ConnectError ? err : fsError(err, `watch '${this.options.root}'`);
    this.options.logger.warn({ root: this.options.root, err: connectErr }, "watch: stopped");
    this.close();
    this.options.onEnd(connectErr);
  }

  /** Whether the watched directory is still the one the watch started on. */
  private async rootIntact(): Promise<boolean> {
    try {
      const { dev, ino } = await stat(this.options.root);
      return dev === this.rootInode?.dev && ino === this.rootInode.ino;
    } catch {
      return false;
    }
  }

  private runBatch(): void {
    this.flush = undefined;
    this.work = this.work.then(() => this.processBatch()).catch((err) => this.fail(err));
  }

  /**
   * Records the entries of a just-watched directory. With `announce` they are news to the client:
   * each is reported as CREATE (plus WRITE when it has content), directories before their contents.
   * `known` is what was seen of this tree at another path (a directory moved within the watch):
   * then only differences are reported, such as a file written right after the move.
   */
  private async scan(dir: WatchedDir, announce: boolean, known?: Subtree, rel = ""): Promise<void> {
    let names: string[];
    try {
      names = await readdir(dir.path);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === "ENOENT" || code === "ENOTDIR") {
        this.dropTree(dir.path);
        return;
      }
      if (dir.path === this.options.root) throw err;
      this.options.logger.warn({ dir: dir.path, err }, "watch: directory not readable, skipped");
      return;
    }
    names.sort();
    const snaps = await mapLimit(names, STAT_CONCURRENCY, (name) => lstatSnapshot(path.join(dir.path, name)));
    const before = known?.get(rel);
    for (const [i, name] of names.entries()) {
      const snap = snaps[i];
      if (this.closed || dir.closed) return;
      // A batch may already have recorded it (a scan runs inside a batch, after its notifications).
      if (!snap || dir.entries.has(name)) continue;
      dir.entries.set(name, snap);
      const child = path.join(dir.path, name);
      const sub = this.options.recursive && isDirectory(snap) ? this.watchDir(child) : undefined;
      if (announce) {
        const [news] = classifyBatch([{ path: child, prev: before?.get(name), cur: snap, renamed: false }]);
        for (const type of news?.events ?? []) await this.emit(child, type);
      }
      if (sub) await this.scan(sub, announce, known, rel ? `${rel}/${name}` : name);
    }
    if (!announce || !before) return;
    const present = new Set(names);
    for (const name of before.keys()) {
      if (!present.has(name) && !this.closed) await this.emit(path.join(dir.path, name), EventType.REMOVE);
    }
  }

  private async processBatch(): Promise<void> {
    if (this.closed) return;
    // Notifications about a file envd is writing wait until it is done (see holdEvents).
    const notifications = this.pending.filter((n) => !this.held(n));
    this.pending = this.pending.filter((n) => this.held(n));
    const batch = ++this.batches;
    for (const [p, at] of this.recentlyGone) if (at <= batch - GONE_BATCHES) this.recentlyGone.delete(p);

    // Coalesce: one look per path, in the order paths were first named.
    const byPath = new Map<string, Notification>();
    for (const n of notifications) {
      if (n.dir.closed) continue;
      const p = path.join(n.dir.path, n.name);
      const seen = byPath.get(p);
      if (seen) seen.renamed ||= n.renamed;
      else byPath.set(p, { ...n });
    }
    const paths = [...byPath.keys()];
    const current = await mapLimit(paths, STAT_CONCURRENCY, lstatSnapshot);

    const observed: Array<Observation & { dir: WatchedDir; name: string }> = [];
    let aboutRoot = false;
    for (const [i, p] of paths.entries()) {
      const { dir, name, renamed } = byPath.get(p)!;
      const prev = dir.entries.get(name);
      const cur = current[i];
      if (!prev && !cur) {
        // Notifications about a watched directory itself carry its own base name.
        if (name === path.basename(dir.path)) {
          aboutRoot ||= dir.path === this.options.root;
          continue;
        }
        if (this.recentlyGone.has(p)) continue;
      }
      observed.push({ path: p, prev, cur, renamed, dir, name });
    }
    const classified = new Map(classifyBatch(observed).map((c) => [c.path, c]));

    // Trees of directories that went away in this batch, for the ones that were only moved.
    const gone = new Map<string, Subtree>();
    for (const o of observed) {
      if (this.closed) return;
      if (o.dir.closed) continue;
      const replaced = o.prev && (!o.cur || o.prev.dev !== o.cur.dev || o.prev.ino !== o.cur.ino);
      if (o.prev && replaced && isDirectory(o.prev)) gone.set(o.path, this.dropTree(o.path));
      if (o.cur) {
        o.dir.entries.set(o.name, o.cur);
        this.recentlyGone.delete(o.path);
      } else {
        o.dir.entries.delete(o.name);
        this.recentlyGone.set(o.path, batch);
      }

      const result = classified.get(o.path);
      const newDir = this.options.recursive && o.cur && isDirectory(o.cur) && (!o.prev || replaced);
      const sub = newDir ? this.watchDir(o.path) : undefined;
      for (const type of result?.events ?? []) await this.emit(o.path, type);
      if (sub) {
        const from = result?.movedFrom;
        await this.scan(sub, true, from === undefined ? undefined : (gone.get(from) ?? this.dropTree(from)));
      }
    }

    // The watched directory was removed or moved away: say so, then stop.
    if (aboutRoot && !this.closed && !(await this.rootIntact())) {
      await this.emit(this.options.root, EventType.REMOVE);
      this.close();
      this.options.onEnd();
    }
  }

  private async emit(target: string, type: EventType): Promise<void> {
    let entry: FilesystemEventInit["entry"];
    if (
      this.options.includeEntry &&
      (type === EventType.CREATE || type === EventType.WRITE || type === EventType.CHMOD)
    ) {
      // Best effort: the entry may be gone again by now.
      entry = await entryInfo(target, this.options.users).catch(() => undefined);
    }
    if (this.closed) return;
    this.options.onEvent({ name: path.relative(this.options.root, target) || ".", type, entry });
  }
}

/** The entry's snapshot, or undefined when it is not there (or not visible) any more. */
async function lstatSnapshot(target: string): Promise<Snapshot | undefined> {
  try {
    return snapshotOf(await lstat(target, { bigint: true }));
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === "ENOENT" || code === "ENOTDIR" || code === "EACCES" || code === "EPERM") return undefined;
    throw err;
  }
}
