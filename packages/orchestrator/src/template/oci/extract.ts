/**
 * Writes image layers (plain tar streams) into a root filesystem as a container runtime does,
 * with OCI whiteouts: `.wh.<name>` deletes `<name>` from the layers below, `.wh..wh..opq` empties
 * its directory of what they had. Layers come from registries nobody vetted, so every name is
 * resolved inside the root as openat2's RESOLVE_IN_ROOT would (symlinks followed as if the root
 * were `/`, never out of it), names that are absolute or hold a `..` are refused, and the last
 * component of an entry is never followed. This runs in a sandbox (layer-child.ts, started by
 * layers.ts) that can write nowhere but the root, should anything here be wrong.
 *
 * Only node: modules and tar here: the sandbox sees little more than this file's package.
 */
import {
  closeSync,
  constants,
  copyFileSync,
  fchmodSync,
  fchownSync,
  futimesSync,
  lchownSync,
  linkSync,
  lstatSync,
  lutimesSync,
  mkdirSync,
  openSync,
  readdirSync,
  readlinkSync,
  rmSync,
  type Stats,
  symlinkSync,
  unlinkSync,
  writeSync,
} from "node:fs";
import path from "node:path";
import { type Readable, Transform } from "node:stream";
import { pipeline } from "node:stream/promises";
import * as tar from "tar";

const WHITEOUT = ".wh.";
const OPAQUE = ".wh..wh..opq";
/** aufs' own bookkeeping (`.wh..wh.plnk`, …), not whiteouts of the image's files. */
const AUFS_META = ".wh..wh.";
const MAX_LINKS = 40;

/** What layer-child.js is asked to do (its first argument, as JSON). */
export interface LayerJob {
  rootfs: string;
  layers: Array<{ path: string; digest: string }>;
  /** Uncompressed bytes all layers together may hold. */
  maxBytes: number;
  /** A static tini for images without one. */
  tini?: string;
}

/** How layer-child.js reports a failure on stderr. */
export const ERROR_PREFIX = "moat-layer-error: ";

/** A layer that cannot be applied (a hostile or broken entry); the message names the entry. */
export class LayerError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "LayerError";
  }
}

/** `text` fit for a log line: printable, quoted, at most `max` characters. */
export function printable(text: string, max = 120): string {
  // biome-ignore lint/suspicious/noControlCharactersInRegex: control characters are what it removes
  const clean = text.replace(/[\u0000-\u001f\u007f-\u009f\u200b-\u200f\u2028-\u202e\u2066-\u2069]/g, "?");
  return `'${clean.length > max ? `${clean.slice(0, max)}…` : clean}'`;
}

/**
 * The components of a layer entry's name (or a hard link's target), `.` and empty ones dropped.
 * Absolute names and `..` components are refused: no runtime needs them, and they are how a
 * layer reaches out of its root.
 */
export function entryParts(name: string, what = "entry"): string[] {
  if (name.startsWith("/")) throw new LayerError(`${what} ${printable(name)} is an absolute path`);
  const parts = name.split("/").filter((p) => p !== "" && p !== ".");
  if (parts.includes("..")) throw new LayerError(`${what} ${printable(name)} has a '..' component`);
  return parts;
}

function lstatOrUndefined(file: string): Stats | undefined {
  try {
    return lstatSync(file);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw err;
  }
}

/**
 * `parts` resolved inside `root` as the kernel would with `root` as `/` (openat2's
 * RESOLVE_IN_ROOT): symlinks followed (absolute ones from `root`), `..` stopping at `root`; the
 * last component followed only when `followLast`. Answers the real components (none a symlink but
 * an unfollowed last one). A missing component is created as a directory when `create`, else the
 * rest is taken as written and `complete` is false.
 */
function walkInRoot(
  root: string,
  parts: readonly string[],
  options: { create: boolean; followLast: boolean; allDirs?: boolean; name: string },
): { real: string[]; complete: boolean } {
  const real: string[] = [];
  const queue = [...parts];
  let links = 0;
  while (queue.length > 0) {
    const component = queue.shift()!;
    if (component === "" || component === ".") continue;
    if (component === "..") {
      real.pop();
      continue;
    }
    if (queue.length === 0 && !options.followLast) {
      real.push(component);
      break;
    }
    const abs = path.join(root, ...real, component);
    const st = lstatOrUndefined(abs);
    if (!st) {
      if (!options.create) {
        queue.unshift(component);
        for (const rest of queue) {
          if (rest === "..") real.pop();
          else if (rest !== "" && rest !== ".") real.push(rest);
        }
        return { real, complete: false };
      }
      mkdirSync(abs, 0o755);
    } else if (st.isSymbolicLink()) {
      if (++links > MAX_LINKS) {
        throw new LayerError(`too many levels of symbolic links in ${printable(options.name)}`);
      }
      const target = readlinkSync(abs);
      if (target.startsWith("/")) real.length = 0;
      queue.unshift(...target.split("/"));
      continue;
    } else if (!st.isDirectory() && (queue.length > 0 || options.allDirs)) {
      throw new LayerError(
        `${printable(options.name)}: ${printable([...real, component].join("/"))} is not a directory`,
      );
    }
    real.push(component);
  }
  return { real, complete: true };
}

/**
 * Directory components `parts` resolved inside `root` (see walkInRoot), every one followed:
 * the real components, missing directories created when `create`, else undefined when one is
 * missing.
 */
export function resolveDirInRoot(
  root: string,
  parts: readonly string[],
  create: boolean,
  name = parts.join("/"),
): string[] | undefined {
  const { real, complete } = walkInRoot(root, parts, { create, followLast: true, allDirs: true, name });
  return complete ? real : undefined;
}

/** `rel` resolved inside `root` (see walkInRoot); missing components are taken as written. */
export function resolveInRoot(root: string, rel: string, followLast = true): string {
  const { real } = walkInRoot(root, rel.split("/"), { create: false, followLast, name: rel });
  return path.join(root, ...real);
}

export interface ExtractOptions {
  /** Give entries their owners (needs root, as image layers do); off for tests without root. */
  owners?: boolean;
}

/** Applies layers, bottom first, to one root filesystem. */
export class LayerExtractor {
  /** What the current layer wrote (and every directory above it): an opaque directory keeps it. */
  private written = new Set<string>();
  private dirTimes: Array<[string[], Date]> = [];
  private readonly owners: boolean;

  constructor(
    private readonly root: string,
    options: ExtractOptions = {},
  ) {
    this.owners = options.owners ?? true;
  }

  /** Applies one layer: `input` is its uncompressed tar. */
  async apply(input: Readable): Promise<void> {
    this.written = new Set();
    this.dirTimes = [];
    let failure: Error | undefined;
    /** Closes the file being written, if any (once). */
    let closeOpen: (() => void) | undefined;
    // Errors in entry and data callbacks end the parse (and reject below); none escapes.
    const fail = (err: unknown) => {
      if (failure) return;
      failure = err instanceof Error ? err : new Error(String(err));
      parser.abort(failure);
    };
    const parser = new tar.Parser({
      strict: true,
      // The input is already decompressed; a tar must not unpack further on its own.
      zstd: false,
      brotli: false,
      onReadEntry: (entry) => {
        if (failure) {
          entry.resume();
          return;
        }
        try {
          closeOpen = this.entry(entry, fail);
          if (!closeOpen) entry.resume();
        } catch (err) {
          entry.resume();
          fail(err);
        }
      },
    });
    try {
      await pipeline(input, refuseCompressed(), parser as unknown as NodeJS.WritableStream);
    } catch (err) {
      throw failure ?? err;
    } finally {
      closeOpen?.();
    }
    if (failure) throw failure;
    // Last: writing into a directory changes its mtime. Only directories still where they were.
    for (const [parts, mtime] of this.dirTimes.reverse()) {
      const real = resolveDirInRoot(this.root, parts, false);
      if (real && real.join("/") === parts.join("/"))
        lutimesSync(path.join(this.root, ...parts), mtime, mtime);
    }
  }

  /** Writes one entry; for a file, whose data follows, answers how to close it. */
  private entry(entry: tar.ReadEntry, fail: (err: unknown) => void): (() => void) | undefined {
    const name = entry.path;
    const parts = entryParts(name);
    if (parts.length === 0) {
      if (entry.type !== "Directory")
        throw new LayerError(`entry ${printable(name)} (the root) is not a directory`);
      this.directoryMeta(this.root, entry);
      return undefined;
    }
    const base = parts.at(-1)!;
    if (base.startsWith(WHITEOUT)) {
      this.whiteout(name, parts);
      return undefined;
    }
    const dir = resolveDirInRoot(this.root, parts.slice(0, -1), true, name)!;
    const target = path.join(this.root, ...dir, base);
    const rel = [...dir, base];
    const isDir = entry.type === "Directory" || entry.type === "GNUDumpDir";
    const source = entry.type === "Link" ? this.linkSource(name, entry.linkpath ?? "") : undefined;
    if (source === target) return undefined;
    const existing = lstatOrUndefined(target);
    if (existing && !(isDir && existing.isDirectory())) this.remove(target, existing);
    switch (entry.type) {
      case "Directory":
      case "GNUDumpDir":
        if (!existing?.isDirectory()) mkdirSync(target, 0o700);
        this.directoryMeta(target, entry);
        if (entry.mtime) this.dirTimes.push([rel, entry.mtime]);
        break;
      case "File":
      case "OldFile":
      case "ContiguousFile":
        this.markWritten(rel);
        return this.file(target, entry, fail);
      case "SymbolicLink":
        symlinkSync(entry.linkpath ?? "", target);
        if (this.owners) lchownSync(target, entry.uid ?? 0, entry.gid ?? 0);
        if (entry.mtime) lutimesSync(target, entry.mtime, entry.mtime);
        break;
      case "Link":
        // link(2) does not follow a symlink source: the link is to the symlink itself.
        linkSync(source!, target);
        break;
      default:
        // Devices and FIFOs: /dev is a fresh tmpfs in every sandbox; nothing else needs them.
        return undefined;
    }
    this.markWritten(rel);
    return undefined;
  }

  /** The file a hard link entry names, inside the root (its last component not followed). */
  private linkSource(name: string, linkpath: string): string {
    const what = `hard link ${printable(name)} to`;
    const parts = entryParts(linkpath, what);
    const dir =
      parts.length > 0 ? resolveDirInRoot(this.root, parts.slice(0, -1), false, linkpath) : undefined;
    const source = dir && path.join(this.root, ...dir, parts.at(-1)!);
    const st = source ? lstatOrUndefined(source) : undefined;
    if (!source || !st || st.isDirectory()) {
      throw new LayerError(`${what} ${printable(linkpath)}: no such file in the image`);
    }
    return source;
  }

  /** Creates a regular file (never through a symlink) and streams the entry's data into it. */
  private file(target: string, entry: tar.ReadEntry, fail: (err: unknown) => void): () => void {
    const fd = openSync(
      target,
      constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW,
      0o600,
    );
    let failed = false;
    let closed = false;
    const close = () => {
      if (closed) return;
      closed = true;
      try {
        closeSync(fd);
      } catch (err) {
        fail(err);
      }
    };
    entry.on("data", (chunk: Buffer) => {
      if (failed) return;
      try {
        for (let at = 0; at < chunk.length; ) at += writeSync(fd, chunk, at);
      } catch (err) {
        failed = true;
        fail(err);
      }
    });
    entry.on("end", () => {
      try {
        if (!failed && !closed) {
          // chown first: it clears setuid and setgid bits, which chmod then sets.
          if (this.owners) fchownSync(fd, entry.uid ?? 0, entry.gid ?? 0);
          fchmodSync(fd, (entry.mode ?? 0o644) & 0o7777);
          if (entry.mtime) futimesSync(fd, entry.mtime, entry.mtime);
        }
      } catch (err) {
        fail(err);
      } finally {
        close();
      }
    });
    return close;
  }

  private directoryMeta(dir: string, entry: tar.ReadEntry): void {
    const fd = openSync(dir, constants.O_RDONLY | constants.O_DIRECTORY | constants.O_NOFOLLOW);
    try {
      if (this.owners) fchownSync(fd, entry.uid ?? 0, entry.gid ?? 0);
      fchmodSync(fd, (entry.mode ?? 0o755) & 0o7777);
    } finally {
      closeSync(fd);
    }
  }

  private whiteout(name: string, parts: string[]): void {
    const base = parts.at(-1)!;
    const dirParts = parts.slice(0, -1);
    if (base === OPAQUE) {
      const dir = resolveDirInRoot(this.root, dirParts, false, name);
      if (dir) this.clearBelow(dir);
      return;
    }
    if (base.startsWith(AUFS_META)) return;
    const hidden = base.slice(WHITEOUT.length);
    if (hidden === "" || hidden === "." || hidden === "..") {
      throw new LayerError(`whiteout ${printable(name)} names no file of its directory`);
    }
    const dir = resolveDirInRoot(this.root, dirParts, false, name);
    // Nothing there to hide, or this layer's own file (a layer never hides what it adds).
    if (!dir || this.written.has([...dir, hidden].join("/"))) return;
    const target = path.join(this.root, ...dir, hidden);
    const st = lstatOrUndefined(target);
    if (st) this.remove(target, st);
  }

  /** An opaque directory: what lower layers put below `dir` goes, what this layer wrote stays. */
  private clearBelow(dir: string[]): void {
    const abs = path.join(this.root, ...dir);
    for (const child of readdirSync(abs)) {
      const rel = [...dir, child];
      const target = path.join(abs, child);
      const st = lstatSync(target);
      if (!this.written.has(rel.join("/"))) this.remove(target, st);
      else if (st.isDirectory()) this.clearBelow(rel);
    }
  }

  /** Removes `target` itself: a symlink is unlinked, never followed; a directory with its tree. */
  private remove(target: string, st: Stats): void {
    if (st.isDirectory()) rmSync(target, { recursive: true, force: true });
    else unlinkSync(target);
  }

  private markWritten(rel: string[]): void {
    for (let i = 1; i <= rel.length; i++) this.written.add(rel.slice(0, i).join("/"));
  }
}

/**
 * What a rootfs needs before it can boot a sandbox: tini (PID 1 of every sandbox; `tini`, a
 * static one, when the image has none) and a /tmp directory, both inside the root.
 */
export function prepareRootfs(root: string, tini: string | undefined): void {
  const bin = resolveDirInRoot(root, ["usr", "bin"], true)!;
  const tiniPath = path.join(root, ...bin, "tini");
  const st = lstatOrUndefined(tiniPath);
  const usable = st?.isFile() || (st?.isSymbolicLink() && resolvesToFile(root, [...bin, "tini"]));
  if (!usable && tini) {
    if (st) rmSync(tiniPath, { recursive: true, force: true });
    copyFileSync(tini, tiniPath, constants.COPYFILE_EXCL);
    const fd = openSync(tiniPath, constants.O_RDONLY | constants.O_NOFOLLOW);
    try {
      fchownSync(fd, 0, 0);
      fchmodSync(fd, 0o755);
    } finally {
      closeSync(fd);
    }
  }
  const tmp = path.join(root, "tmp");
  const tmpStat = lstatOrUndefined(tmp);
  if (!tmpStat?.isDirectory()) {
    if (tmpStat) unlinkSync(tmp);
    mkdirSync(tmp);
    const fd = openSync(tmp, constants.O_RDONLY | constants.O_DIRECTORY | constants.O_NOFOLLOW);
    try {
      fchmodSync(fd, 0o1777);
    } finally {
      closeSync(fd);
    }
  }
}

function resolvesToFile(root: string, parts: string[]): boolean {
  try {
    return lstatOrUndefined(resolveInRoot(root, parts.join("/")))?.isFile() ?? false;
  } catch {
    return false;
  }
}

/** Passes a plain tar through; a stream still compressed (gzip, zstd) is refused, not unpacked again. */
function refuseCompressed(): Transform {
  let first = true;
  return new Transform({
    transform(chunk: Buffer, _encoding, callback) {
      if (first) {
        first = false;
        if (
          (chunk[0] === 0x1f && chunk[1] === 0x8b) ||
          (chunk.length >= 4 && chunk.readUInt32LE(0) === 0xfd2fb528)
        ) {
          callback(
            new LayerError("the layer is compressed twice (a compressed tar inside a compressed blob)"),
          );
          return;
        }
      }
      callback(null, chunk);
    },
  });
}
