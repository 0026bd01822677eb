import { stat, statfs } from "node:fs/promises";
import type { ServiceImpl } from "@connectrpc/connect";
import { Code, ConnectError } from "@connectrpc/connect";
import type { Filesystem } from "@moat/shared/gen/envd/filesystem";
import { resolvePath } from "../../auth/paths.js";
import type { User } from "../../auth/users.js";
import { type EnvdContext, requestUser } from "../../context.js";
import { fsError } from "../../errors.js";
import { type Access, accessFor, READ, SEARCH } from "./access.js";
import { DirWatcher, type DirWatcherOptions } from "./dir-watcher.js";
import { listDir } from "./list-dir.js";
import { makeDir } from "./make-dir.js";
import { move } from "./move.js";
import { remove } from "./remove.js";
import { stat as statRPC } from "./stat.js";
import { watchDir } from "./watch-dir.js";
import { createWatcher, getWatcherEvents, type PollingWatcher, removeWatcher } from "./watchers.js";

/** What a watch request asks for (WatchDir and CreateWatcher alike). */
export interface WatchRequest {
  path: string;
  recursive: boolean;
  includeEntry: boolean;
  allowNetworkMounts: boolean;
}

/** Where a request acts: as whom, on which absolute path, under which permission checks. */
export interface Target {
  user: User;
  path: string;
  access: Access;
}

/** statfs magic numbers of network filesystems (linux/magic.h), which inotify cannot watch reliably. */
const NETWORK_FS_TYPES = new Set([0x6969, 0xff534d42, 0x517b, 0xfe534d42, 0x65735546]);

/**
 * filesystem.Filesystem: stat, list, make, move, remove and watch paths as the request's user.
 * Each RPC lives in its own file; this class owns the watchers they share.
 */
export class FilesystemService {
  private readonly pollingWatchers = new Map<string, PollingWatcher>();
  /** Stops for the open WatchDir streams, so that close() can end them. */
  private readonly streams = new Set<() => void>();

  constructor(readonly ctx: EnvdContext) {}

  implementation(): ServiceImpl<typeof Filesystem> {
    return {
      stat: (req, hctx) => statRPC(this, req, hctx),
      makeDir: (req, hctx) => makeDir(this, req, hctx),
      move: (req, hctx) => move(this, req, hctx),
      listDir: (req, hctx) => listDir(this, req, hctx),
      remove: (req, hctx) => remove(this, req, hctx),
      watchDir: (req, hctx) => watchDir(this, req, hctx),
      createWatcher: (req, hctx) => createWatcher(this, req, hctx),
      getWatcherEvents: (req) => getWatcherEvents(this, req),
      removeWatcher: (req) => removeWatcher(this, req),
    };
  }

  /** The request's user and the absolute path `input` names for them. */
  target(headers: Headers, input: string): Target {
    const user = requestUser(this.ctx, headers);
    return { user, path: resolvePath(input, user, this.ctx.state.defaultWorkdir), access: accessFor(user) };
  }

  /**
   * Starts watching the directory a watch request names, after the checks envd makes: it must
   * exist (not_found), be a directory (invalid_argument), be readable by the user and, unless
   * allowed, not be on a network filesystem (invalid_argument).
   */
  async openWatcher(
    headers: Headers,
    req: WatchRequest,
    sink: Pick<DirWatcherOptions, "onEvent" | "onEnd">,
  ): Promise<DirWatcher> {
    const { path: dir, access } = this.target(headers, req.path);
    try {
      if (!(await stat(dir)).isDirectory()) {
        throw new ConnectError(`path '${dir}' is not a directory`, Code.InvalidArgument);
      }
      await access.requireDir(dir, READ | SEARCH);
      if (!req.allowNetworkMounts && NETWORK_FS_TYPES.has((await statfs(dir)).type >>> 0)) {
        throw new ConnectError(`cannot watch '${dir}': it is on a network filesystem`, Code.InvalidArgument);
      }
    } catch (err) {
      throw fsError(err, `path '${dir}'`);
    }
    return DirWatcher.start({
      root: dir,
      recursive: req.recursive,
      includeEntry: req.includeEntry,
      users: this.ctx.users,
      logger: this.ctx.logger,
      ...sink,
    });
  }

  /** Registers an open WatchDir stream; returns its unregistration. */
  trackStream(stop: () => void): () => void {
    this.streams.add(stop);
    return () => this.streams.delete(stop);
  }

  addPollingWatcher(watcher: PollingWatcher): void {
    this.pollingWatchers.set(watcher.id, watcher);
  }

  /** The polling watcher with this id; not_found otherwise. */
  pollingWatcher(id: string): PollingWatcher {
    const watcher = this.pollingWatchers.get(id);
    if (!watcher) throw new ConnectError(`watcher with id '${id}' not found`, Code.NotFound);
    return watcher;
  }

  deletePollingWatcher(id: string): void {
    this.pollingWatchers.get(id)?.close();
    this.pollingWatchers.delete(id);
  }

  /** Stops every watcher and ends every watch stream (envd shutdown). */
  async close(): Promise<void> {
    for (const stop of [...this.streams]) stop();
    this.streams.clear();
    for (const watcher of this.pollingWatchers.values()) watcher.close();
    this.pollingWatchers.clear();
  }
}
