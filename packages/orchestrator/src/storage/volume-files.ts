/**
 * The files of a volume, as the API's volume content routes read and write them. The node runs as
 * root and the volume is also written by the code of every sandbox that mounts it, which may plant
 * a symlink (`x -> /etc`) or swap a directory for one in the middle of a request. So nothing here
 * names a file by a path from the host's root: the walk starts at the volume's root held open by
 * descriptor and goes one component at a time, each opened through `/proc/self/fd/<parent>/<name>`
 * (the kernel resolves that to the held directory itself, as openat would) with O_NOFOLLOW, and the
 * final operation acts on a name inside the last held directory (mkdir, rename, unlink, lstat,
 * lchown) or on a descriptor opened without following a link (read, fchown, fchmod). A symlink is
 * reported as one and never followed; `.` and `..`, NUL and over-long names are refused before any
 * of it. The volume is its own file system (storage/volumes.ts), so a hard link cannot reach the
 * host's files either.
 */
import { randomBytes } from "node:crypto";
import { constants, type Stats } from "node:fs";
import {
  type FileHandle,
  lchown,
  lstat,
  mkdir,
  open,
  readdir,
  readlink,
  rename,
  rmdir,
  unlink,
} from "node:fs/promises";

/** What went wrong, in terms the API turns into statuses. */
export type VolumeFileErrorKind = "invalid" | "not-found" | "exists" | "not-empty" | "full";

export class VolumeFileError extends Error {
  constructor(
    readonly kind: VolumeFileErrorKind,
    message: string,
  ) {
    super(message);
    this.name = "VolumeFileError";
  }
}

export type VolumeEntryType = "file" | "directory" | "symlink" | "unknown";

export interface VolumeEntry {
  name: string;
  type: VolumeEntryType;
  /** From the volume's root, starting with "/". */
  path: string;
  size: number;
  /** Permission bits only. */
  mode: number;
  uid: number;
  gid: number;
  atime: Date;
  mtime: Date;
  ctime: Date;
  /** A symlink's target as written. */
  target?: string;
}

/** Owner and mode a call gives what it creates or changes; unset ones keep or default. */
export interface Ownership {
  uid?: number;
  gid?: number;
  mode?: number;
}

export interface VolumeFilesOptions {
  /** Owner of what is created without one: the sandboxes' `user` (1000:1000 in moat's templates). */
  defaultOwner: { uid: number; gid: number };
  /** Most entries one listing returns. */
  maxListEntries?: number;
}

/** Longest path a request may name, in bytes, and longest name in it (ext4's). */
export const MAX_PATH_BYTES = 4096;
export const MAX_NAME_BYTES = 255;
/** Deepest listing and deepest tree a removal walks. */
export const MAX_LIST_DEPTH = 32;
const MAX_REMOVE_DEPTH = 512;
const DEFAULT_MAX_LIST_ENTRIES = 100_000;
const READ_CHUNK_BYTES = 1024 * 1024;
const FILE_MODE = 0o644;
const DIR_MODE = 0o755;
/** A uid or gid of (uint32)-1 means "unchanged" to chown; it is not an id. */
const MAX_ID = 0xffff_fffe;

/** The components of a request's path, from the volume's root ("/" and "" are the root). */
export function parseVolumePath(requested: string): string[] {
  if (typeof requested !== "string") throw new VolumeFileError("invalid", "the path must be a string");
  if (requested.includes("\0")) throw new VolumeFileError("invalid", "the path holds a NUL character");
  if (Buffer.byteLength(requested) > MAX_PATH_BYTES) {
    throw new VolumeFileError("invalid", `the path is longer than ${MAX_PATH_BYTES} bytes`);
  }
  // Leading, trailing and doubled slashes name nothing: the path is always from the volume's root.
  const parts = requested.split("/").filter((p) => p !== "");
  for (const part of parts) {
    if (part === "." || part === "..") {
      throw new VolumeFileError(
        "invalid",
        `'${requested}' has a '${part}' component: paths are from the volume's root, without '.' or '..'`,
      );
    }
    if (Buffer.byteLength(part) > MAX_NAME_BYTES) {
      throw new VolumeFileError("invalid", `'${requested}' has a name longer than ${MAX_NAME_BYTES} bytes`);
    }
  }
  return parts;
}

/** Checks ids and mode: ids are uint32 but -1; modes are permission bits without setuid/setgid. */
export function checkOwnership(ownership: Ownership): void {
  for (const key of ["uid", "gid"] as const) {
    const id = ownership[key];
    if (id !== undefined && !(Number.isInteger(id) && id >= 0 && id <= MAX_ID)) {
      throw new VolumeFileError("invalid", `${key} must be a whole number from 0 to ${MAX_ID}, got ${id}`);
    }
  }
  const { mode } = ownership;
  if (mode === undefined) return;
  if (!(Number.isInteger(mode) && mode >= 0 && mode <= 0o7777)) {
    throw new VolumeFileError("invalid", `mode must be permission bits from 0 to 0o7777, got ${mode}`);
  }
  if ((mode & 0o6000) !== 0) {
    throw new VolumeFileError(
      "invalid",
      `mode 0o${mode.toString(8)} has setuid or setgid bits, which volumes refuse`,
    );
  }
}

/** A directory held open; its entries are named through /proc/self/fd so that no path is re-resolved. */
class Held {
  constructor(
    readonly handle: FileHandle,
    /** Its path from the volume's root, for entries and messages. */
    readonly path: string,
    private readonly owned: boolean,
  ) {}

  entry(name: string): string {
    return `/proc/self/fd/${this.handle.fd}/${name}`;
  }

  child(name: string): string {
    return this.path === "/" ? `/${name}` : `${this.path}/${name}`;
  }

  /** The volume's root is the caller's to close. */
  close(): Promise<void> {
    return this.owned ? this.handle.close() : Promise.resolve();
  }
}

/**
 * Operations on one volume's files. `root` is the volume's root directory, held open by the
 * caller (who checked it is the volume's own mounted file system) for the length of the call.
 */
export class VolumeFiles {
  private readonly maxListEntries: number;

  constructor(
    private readonly root: FileHandle,
    private readonly options: VolumeFilesOptions,
  ) {
    this.maxListEntries = options.maxListEntries ?? DEFAULT_MAX_LIST_ENTRIES;
  }

  async stat(requested: string): Promise<VolumeEntry> {
    const parts = parseVolumePath(requested);
    const name = parts.at(-1);
    if (name === undefined) return entryOf("", "/", await this.root.stat());
    return this.withParent(parts, async (parent) => {
      const path = parent.child(name);
      return entryAt(parent, name, path, await lstatOf(parent, name, path));
    });
  }

  /** The entries of a directory, `depth` levels down (1: its own entries), by name. */
  async list(requested: string, depth = 1): Promise<VolumeEntry[]> {
    const levels = Math.min(Math.max(1, Math.trunc(depth) || 1), MAX_LIST_DEPTH);
    const parts = parseVolumePath(requested);
    const out: VolumeEntry[] = [];
    const name = parts.at(-1);
    if (name === undefined) {
      await this.listInto(new Held(this.root, "/", false), levels, out);
      return out;
    }
    return this.withParent(parts, async (parent) => {
      const dir = await openDir(parent, name, parent.child(name));
      try {
        await this.listInto(dir, levels, out);
      } finally {
        await dir.close();
      }
      return out;
    });
  }

  /** Makes a directory; `parents`: its missing parents too, and an existing directory is fine. */
  async makeDir(requested: string, ownership: Ownership, parents: boolean): Promise<VolumeEntry> {
    checkOwnership(ownership);
    const parts = parseVolumePath(requested);
    const name = parts.at(-1);
    if (name === undefined) {
      if (parents) return entryOf("", "/", await this.root.stat());
      throw new VolumeFileError("exists", "the volume's root directory exists");
    }
    return this.withParent(
      parts,
      async (parent) => {
        const path = parent.child(name);
        try {
          const dir = await this.makeChildDir(parent, name, path, ownership);
          try {
            return entryOf(name, path, await dir.handle.stat());
          } finally {
            await dir.close();
          }
        } catch (err) {
          if ((err as NodeJS.ErrnoException).code !== "EEXIST") throw err;
          const existing = await lstatOf(parent, name, path);
          if (parents && existing.isDirectory()) return entryOf(name, path, existing);
          throw new VolumeFileError("exists", `'${path}' already exists`);
        }
      },
      parents ? ownership : undefined,
    );
  }

  /** Removes a file, a link, or a directory and everything in it. */
  async remove(requested: string): Promise<void> {
    const parts = parseVolumePath(requested);
    const name = parts.at(-1);
    if (name === undefined) {
      throw new VolumeFileError("invalid", "the volume's root cannot be removed; delete the volume instead");
    }
    await this.withParent(parts, async (parent) => {
      const path = parent.child(name);
      const stats = await lstatOf(parent, name, path);
      if (stats.isDirectory()) await removeTree(parent, name, path, 0);
      else await guard(path, () => unlink(parent.entry(name)));
    });
  }

  /** Changes owner and mode; a symlink's owner changes, not its target's, and it has no mode. */
  async updateMetadata(requested: string, ownership: Ownership): Promise<VolumeEntry> {
    checkOwnership(ownership);
    const parts = parseVolumePath(requested);
    const name = parts.at(-1);
    if (name === undefined) {
      await applyOwnership(this.root, ownership);
      return entryOf("", "/", await this.root.stat());
    }
    return this.withParent(parts, async (parent) => {
      const path = parent.child(name);
      let handle: FileHandle | undefined;
      try {
        // O_NONBLOCK: a FIFO a sandbox planted must not hold the call.
        handle = await open(
          parent.entry(name),
          constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK,
        );
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code;
        // A symlink (ELOOP), a socket (ENXIO) or a device (EACCES on a nodev mount): owner only,
        // by name, without following anything.
        if (code !== "ELOOP" && code !== "ENXIO" && code !== "EACCES") throw translate(err, path);
        const stats = await lstatOf(parent, name, path);
        if (ownership.mode !== undefined) {
          throw new VolumeFileError(
            "invalid",
            `'${path}' is a ${describe(stats)}; its mode cannot be set here`,
          );
        }
        if (ownership.uid !== undefined || ownership.gid !== undefined) {
          await guard(path, () =>
            lchown(parent.entry(name), ownership.uid ?? stats.uid, ownership.gid ?? stats.gid),
          );
        }
        return entryAt(parent, name, path, await lstatOf(parent, name, path));
      }
      try {
        await guard(path, () => applyOwnership(handle, ownership));
        return entryOf(name, path, await handle.stat());
      } finally {
        await handle.close();
      }
    });
  }

  /**
   * Opens a regular file for reading, without following a link: its entry and a reader of its
   * bytes from the descriptor (a file swapped after the open is not what is read). The caller
   * closes the handle.
   */
  async openRead(requested: string): Promise<{ entry: VolumeEntry; handle: FileHandle }> {
    const parts = parseVolumePath(requested);
    const name = parts.at(-1);
    if (name === undefined) throw new VolumeFileError("invalid", "'/' is a directory, not a file");
    return this.withParent(parts, async (parent) => {
      const path = parent.child(name);
      let handle: FileHandle;
      try {
        handle = await open(
          parent.entry(name),
          constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK,
        );
      } catch (err) {
        throw translate(err, path);
      }
      try {
        const stats = await handle.stat();
        if (!stats.isFile()) {
          throw new VolumeFileError("invalid", `'${path}' is a ${describe(stats)}, not a regular file`);
        }
        return { entry: entryOf(name, path, stats), handle };
      } catch (err) {
        await handle.close();
        throw err;
      }
    });
  }

  /**
   * Writes a file from `chunks`: into a new file beside it, then renamed over the name, so that
   * readers see the old content or the new, never half; a symlink of that name is replaced, not
   * followed. Owner and mode: those given, else the replaced file's, else the default owner and
   * 0644.
   */
  async write(
    requested: string,
    ownership: Ownership,
    chunks: AsyncIterable<Uint8Array>,
  ): Promise<VolumeEntry> {
    checkOwnership(ownership);
    const parts = parseVolumePath(requested);
    const name = parts.at(-1);
    if (name === undefined) throw new VolumeFileError("invalid", "'/' is a directory, not a file");
    return this.withParent(parts, async (parent) => {
      const path = parent.child(name);
      const existing = await lstat(parent.entry(name)).catch(() => undefined);
      if (existing?.isDirectory()) throw new VolumeFileError("invalid", `'${path}' is a directory`);
      const previous = existing?.isFile() ? existing : undefined;
      const temp = `.moat-write-${randomBytes(6).toString("hex")}`;
      let handle: FileHandle | undefined;
      try {
        handle = await guard(path, () =>
          open(
            parent.entry(temp),
            constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW,
            0o600,
          ),
        );
        for await (const chunk of chunks) {
          let offset = 0;
          while (offset < chunk.byteLength) {
            const { bytesWritten } = await guard(path, () =>
              handle!.write(chunk, offset, chunk.byteLength - offset),
            );
            offset += bytesWritten;
          }
        }
        await guard(path, () =>
          applyOwnership(handle!, {
            uid: ownership.uid ?? previous?.uid ?? this.options.defaultOwner.uid,
            gid: ownership.gid ?? previous?.gid ?? this.options.defaultOwner.gid,
            mode: ownership.mode ?? (previous ? previous.mode & 0o1777 : FILE_MODE),
          }),
        );
        const stats = await handle.stat();
        await handle.close();
        handle = undefined;
        await guard(path, () => rename(parent.entry(temp), parent.entry(name)));
        return entryOf(name, path, stats);
      } catch (err) {
        await handle?.close().catch(() => undefined);
        await unlink(parent.entry(temp)).catch(() => undefined);
        throw err;
      }
    });
  }

  /**
   * Holds the parent directory of the path's last component while `work` runs. With `create`,
   * missing directories on the way are made (owned as `create` says, else by the default owner).
   */
  private async withParent<T>(
    parts: string[],
    work: (parent: Held) => Promise<T>,
    create?: Ownership,
  ): Promise<T> {
    let held = new Held(this.root, "/", false);
    try {
      for (const name of parts.slice(0, -1)) {
        const path = held.child(name);
        let next: Held;
        try {
          next = await openDir(held, name, path);
        } catch (err) {
          if (!create || !(err instanceof VolumeFileError && err.kind === "not-found")) throw err;
          try {
            next = await this.makeChildDir(held, name, path, create);
          } catch (mkdirErr) {
            // Made in the meantime (another request, a sandbox): take it as it is.
            if ((mkdirErr as NodeJS.ErrnoException).code !== "EEXIST") throw mkdirErr;
            next = await openDir(held, name, path);
          }
        }
        await held.close();
        held = next;
      }
      return await work(held);
    } catch (err) {
      throw translate(err, `/${parts.join("/")}`);
    } finally {
      await held.close().catch(() => undefined);
    }
  }

  /** mkdir of `name` in `parent`, then the new directory opened (never through a link) and owned. */
  private async makeChildDir(parent: Held, name: string, path: string, ownership: Ownership): Promise<Held> {
    await guard(path, () => mkdir(parent.entry(name), { mode: 0o700 }), ["EEXIST"]);
    const dir = await openDir(parent, name, path);
    try {
      await guard(path, () =>
        applyOwnership(dir.handle, {
          uid: ownership.uid ?? this.options.defaultOwner.uid,
          gid: ownership.gid ?? this.options.defaultOwner.gid,
          mode: ownership.mode ?? DIR_MODE,
        }),
      );
      return dir;
    } catch (err) {
      await dir.close();
      throw err;
    }
  }

  private async listInto(dir: Held, levels: number, out: VolumeEntry[]): Promise<void> {
    const names = (await guard(dir.path, () => readdir(`/proc/self/fd/${dir.handle.fd}`))).sort();
    for (const name of names) {
      const path = dir.child(name);
      // Gone since the readdir (a sandbox removed it): not listed.
      const stats = await lstat(dir.entry(name)).catch(() => undefined);
      if (!stats) continue;
      if (out.length >= this.maxListEntries) {
        throw new VolumeFileError(
          "invalid",
          `the listing has more than ${this.maxListEntries} entries; list a subdirectory or with a smaller depth`,
        );
      }
      out.push(await entryAt(dir, name, path, stats));
      if (levels > 1 && stats.isDirectory()) {
        const child = await openDir(dir, name, path).catch(() => undefined);
        if (!child) continue;
        try {
          await this.listInto(child, levels - 1, out);
        } finally {
          await child.close();
        }
      }
    }
  }
}

/** Opens `name` in `parent` as a directory, refusing a symlink (ELOOP) or anything else. */
async function openDir(parent: Held, name: string, path: string): Promise<Held> {
  let handle: FileHandle;
  try {
    handle = await open(parent.entry(name), constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
  } catch (err) {
    throw translate(err, path);
  }
  const stats = await handle.stat().catch(async (err: unknown) => {
    await handle.close();
    throw err;
  });
  if (!stats.isDirectory()) {
    await handle.close();
    throw new VolumeFileError("invalid", `'${path}' is a ${describe(stats)}, not a directory`);
  }
  return new Held(handle, path, true);
}

/** Removes directory `name` of `parent` and what is in it, entry by entry through held directories. */
async function removeTree(parent: Held, name: string, path: string, depth: number): Promise<void> {
  if (depth > MAX_REMOVE_DEPTH) {
    throw new VolumeFileError(
      "invalid",
      `'${path}' is nested deeper than ${MAX_REMOVE_DEPTH} levels; remove its subdirectories first`,
    );
  }
  for (let attempt = 0; ; attempt++) {
    let dir: Held;
    try {
      dir = await openDir(parent, name, path);
    } catch (err) {
      // Swapped for a file or a link since it was looked at: remove the name itself.
      if (err instanceof VolumeFileError && err.kind === "invalid") {
        await guard(path, () => unlink(parent.entry(name)), ["ENOENT"]);
        return;
      }
      if (err instanceof VolumeFileError && err.kind === "not-found") return;
      throw err;
    }
    try {
      for (const child of await guard(path, () => readdir(`/proc/self/fd/${dir.handle.fd}`))) {
        const childPath = dir.child(child);
        const stats = await lstat(dir.entry(child)).catch(() => undefined);
        if (!stats) continue;
        if (stats.isDirectory()) await removeTree(dir, child, childPath, depth + 1);
        else await guard(childPath, () => unlink(dir.entry(child)), ["ENOENT"]);
      }
    } finally {
      await dir.close();
    }
    try {
      await rmdir(parent.entry(name));
      return;
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === "ENOENT") return;
      // Something (a sandbox) keeps adding entries: a few more passes, then give up.
      if (code !== "ENOTEMPTY" || attempt >= 3) throw translate(err, path);
    }
  }
}

async function applyOwnership(handle: FileHandle, ownership: Ownership): Promise<void> {
  if (ownership.uid !== undefined || ownership.gid !== undefined) {
    const stats = await handle.stat();
    await handle.chown(ownership.uid ?? stats.uid, ownership.gid ?? stats.gid);
  }
  if (ownership.mode !== undefined) await handle.chmod(ownership.mode);
}

async function lstatOf(parent: Held, name: string, path: string): Promise<Stats> {
  return guard(path, () => lstat(parent.entry(name)));
}

async function entryAt(parent: Held, name: string, path: string, stats: Stats): Promise<VolumeEntry> {
  const entry = entryOf(name, path, stats);
  if (stats.isSymbolicLink()) {
    // readlink of the name reads the link itself; it follows nothing.
    const target = await readlink(parent.entry(name)).catch(() => undefined);
    if (target !== undefined) entry.target = target;
  }
  return entry;
}

function entryOf(name: string, path: string, stats: Stats): VolumeEntry {
  return {
    name,
    type: stats.isFile()
      ? "file"
      : stats.isDirectory()
        ? "directory"
        : stats.isSymbolicLink()
          ? "symlink"
          : "unknown",
    path,
    size: stats.size,
    mode: stats.mode & 0o7777,
    uid: stats.uid,
    gid: stats.gid,
    atime: stats.atime,
    mtime: stats.mtime,
    ctime: stats.ctime,
  };
}

function describe(stats: Stats): string {
  if (stats.isDirectory()) return "directory";
  if (stats.isSymbolicLink()) return "symbolic link (links are not followed)";
  if (stats.isFIFO()) return "FIFO";
  if (stats.isSocket()) return "socket";
  if (stats.isCharacterDevice() || stats.isBlockDevice()) return "device";
  return "file";
}

/** Runs a file system call, turning its errno into a VolumeFileError about `path`; `pass` codes rethrow as they are. */
async function guard<T>(path: string, fn: () => Promise<T>, pass: string[] = []): Promise<T> {
  try {
    return await fn();
  } catch (err) {
    if (pass.includes((err as NodeJS.ErrnoException).code ?? "")) throw err;
    throw translate(err, path);
  }
}

function translate(err: unknown, path: string): unknown {
  if (err instanceof VolumeFileError) return err;
  switch ((err as NodeJS.ErrnoException).code) {
    case "ENOENT":
      return new VolumeFileError("not-found", `'${path}' does not exist`);
    case "ENOTDIR":
      return new VolumeFileError("invalid", `a component of '${path}' is not a directory`);
    case "ELOOP":
      return new VolumeFileError(
        "invalid",
        `'${path}' is or passes through a symbolic link; the volume content API does not follow links`,
      );
    case "EISDIR":
      return new VolumeFileError("invalid", `'${path}' is a directory`);
    case "EEXIST":
      return new VolumeFileError("exists", `'${path}' already exists`);
    case "ENOTEMPTY":
      return new VolumeFileError(
        "not-empty",
        `'${path}' is not empty and kept changing while it was removed`,
      );
    case "ENAMETOOLONG":
      return new VolumeFileError("invalid", `'${path}' is too long`);
    case "ENOSPC":
    case "EDQUOT":
      return new VolumeFileError("full", "the volume is full: remove files from it to make room");
    case "ENXIO":
    case "EACCES":
      return new VolumeFileError("invalid", `'${path}' is not a regular file or directory`);
    default:
      return err;
  }
}

/** The bytes of an opened file, in chunks, from its descriptor. */
export async function* readChunks(handle: FileHandle): AsyncGenerator<Uint8Array> {
  for (;;) {
    const buffer = Buffer.allocUnsafe(READ_CHUNK_BYTES);
    const { bytesRead } = await handle.read(buffer, 0, buffer.length, null);
    if (bytesRead === 0) return;
    yield buffer.subarray(0, bytesRead);
  }
}
