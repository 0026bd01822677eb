/**
 * Applies image layers to a root filesystem, bottom first, as a container runtime would: each a
 * tar (plain, gzip or zstd, told by its first bytes), with OCI whiteouts: `.wh.<name>` deletes
 * `<name>` from the layers below, `.wh..wh..opq` empties its directory of what they had.
 */
import { spawn } from "node:child_process";
import {
  chmodSync,
  chownSync,
  closeSync,
  createReadStream,
  lchownSync,
  linkSync,
  lstatSync,
  mkdirSync,
  openSync,
  readlinkSync,
  realpathSync,
  rmSync,
  symlinkSync,
  utimesSync,
  writeSync,
} from "node:fs";
import { open, readdir, rm } from "node:fs/promises";
import path from "node:path";
import type { Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import { createGunzip } from "node:zlib";
import * as tar from "tar";

const WHITEOUT = ".wh.";
const OPAQUE = ".wh..wh..opq";

export async function applyLayers(layers: ReadonlyArray<{ path: string }>, rootfs: string): Promise<void> {
  for (const layer of layers) await applyLayer(layer.path, rootfs);
}

export async function applyLayer(blob: string, rootfs: string): Promise<void> {
  // First pass: what the layer holds, so an opaque directory keeps this layer's own entries.
  const entries = new Set<string>();
  const opaque: string[] = [];
  let layer = await decompressed(blob);
  await pipeline(
    layer.stream,
    new tar.Parser({
      onReadEntry: (entry) => {
        const name = normalize(entry.path);
        if (path.posix.basename(name) === OPAQUE) opaque.push(path.posix.dirname(name));
        else entries.add(name);
        entry.resume();
      },
    }),
  );
  await layer.done;
  for (const dir of opaque) {
    const target = resolveInRoot(realpathSync(rootfs), dir);
    const children = await readdir(target).catch(() => [] as string[]);
    for (const child of children) {
      const name = dir === "." ? child : `${dir}/${child}`;
      if (!entries.has(name)) await rm(path.join(target, child), { recursive: true, force: true });
    }
  }
  // Second pass: extract, turning whiteouts into deletions.
  layer = await decompressed(blob);
  const root = realpathSync(rootfs);
  const dirTimes: Array<[string, Date]> = [];
  await pipeline(
    layer.stream,
    new tar.Parser({
      onReadEntry: (entry) => {
        try {
          extractEntry(root, entry, dirTimes);
        } catch (err) {
          entry.resume();
          throw err;
        }
      },
    }),
  );
  await layer.done;
  // Last: writing into a directory changes its mtime.
  for (const [dir, mtime] of dirTimes.reverse()) utimesSync(dir, mtime, mtime);
}

/**
 * Writes one tar entry under `root` as a container runtime does: exact modes (setuid and sticky
 * bits included), owners and times; paths resolved inside the rootfs as if it were `/`, so that
 * the image's symlinks (absolute ones too) never lead to the host's files.
 */
function extractEntry(root: string, entry: tar.ReadEntry, dirTimes: Array<[string, Date]>): void {
  const name = normalize(entry.path);
  const base = path.posix.basename(name);
  if (name === "." && entry.type === "Directory") {
    applyMeta(root, entry);
    entry.resume();
    return;
  }
  if (base === OPAQUE || name === ".") {
    entry.resume();
    return;
  }
  if (base.startsWith(WHITEOUT)) {
    const parent = resolveInRoot(root, path.posix.dirname(name));
    rmSync(path.join(parent, base.slice(WHITEOUT.length)), { recursive: true, force: true });
    entry.resume();
    return;
  }
  const parent = resolveInRoot(root, path.posix.dirname(name));
  mkdirSync(parent, { recursive: true });
  const target = path.join(parent, base);
  const existing = lstatOrUndefined(target);
  if (existing && !(entry.type === "Directory" && existing.isDirectory())) {
    rmSync(target, { recursive: true, force: true });
  }
  switch (entry.type) {
    case "Directory":
      if (!existing?.isDirectory()) mkdirSync(target);
      applyMeta(target, entry);
      if (entry.mtime) dirTimes.push([target, entry.mtime]);
      entry.resume();
      return;
    case "File":
    case "OldFile":
    case "ContiguousFile": {
      const fd = openSync(target, "w", 0o600);
      entry.on("data", (chunk: Buffer) => writeSync(fd, chunk));
      entry.on("end", () => {
        closeSync(fd);
        applyMeta(target, entry);
      });
      return;
    }
    case "SymbolicLink":
      symlinkSync(entry.linkpath ?? "", target);
      lchownSync(target, entry.uid ?? 0, entry.gid ?? 0);
      entry.resume();
      return;
    case "Link": {
      const source = resolveInRoot(root, normalize(entry.linkpath ?? ""), false);
      linkSync(source, target);
      entry.resume();
      return;
    }
    default:
      // Devices and FIFOs: /dev is a fresh tmpfs in every sandbox; nothing else needs them.
      entry.resume();
  }
}

function applyMeta(target: string, entry: tar.ReadEntry): void {
  // chown first: it clears setuid and setgid bits, which chmod then sets.
  chownSync(target, entry.uid ?? 0, entry.gid ?? 0);
  chmodSync(target, (entry.mode ?? 0o644) & 0o7777);
  if (entry.mtime) utimesSync(target, entry.mtime, entry.mtime);
}

function lstatOrUndefined(file: string) {
  try {
    return lstatSync(file);
  } catch {
    return undefined;
  }
}

/**
 * `rel` resolved inside `root` as the kernel would with `root` as `/` (openat2's RESOLVE_IN_ROOT):
 * symlinks are followed (absolute ones from `root`), `..` stops at `root`. The last component is
 * followed only when `followLast`.
 */
export function resolveInRoot(root: string, rel: string, followLast = true): string {
  const parts: string[] = [];
  const queue = rel.split("/").filter((p) => p !== "" && p !== ".");
  let links = 0;
  while (queue.length > 0) {
    const component = queue.shift()!;
    if (component === "..") {
      parts.pop();
      continue;
    }
    if (queue.length === 0 && !followLast) {
      parts.push(component);
      break;
    }
    const candidate = path.join(root, ...parts, component);
    const st = lstatOrUndefined(candidate);
    if (st?.isSymbolicLink()) {
      if (++links > 40) throw new Error(`too many levels of symbolic links in '${rel}'`);
      const target = readlinkSync(candidate);
      if (target.startsWith("/")) parts.length = 0;
      queue.unshift(...target.split("/").filter((p) => p !== "" && p !== "."));
      continue;
    }
    parts.push(component);
  }
  return path.join(root, ...parts);
}

/**
 * The layer's tar stream, decompressed by what its first bytes say it is; `done` rejects when the
 * decompressor failed (a truncated stream alone would look like a short, valid tar).
 */
async function decompressed(blob: string): Promise<{ stream: Readable; done: Promise<void> }> {
  const handle = await open(blob, "r");
  const magic = Buffer.alloc(4);
  await handle.read(magic, 0, 4, 0);
  await handle.close();
  if (magic[0] === 0x1f && magic[1] === 0x8b) {
    return { stream: createReadStream(blob).pipe(createGunzip()), done: Promise.resolve() };
  }
  if (magic.readUInt32LE(0) === 0xfd2fb528) {
    // Node 20 has no zstd; Debian's zstd does it in a stream.
    const child = spawn("zstd", ["-dcq", "--", blob], { stdio: ["ignore", "pipe", "pipe"] });
    let stderr = "";
    child.stderr.on("data", (chunk: Buffer) => {
      stderr += chunk.toString();
    });
    const done = new Promise<void>((resolve, reject) => {
      child.once("error", reject);
      child.once("close", (code) =>
        code === 0 ? resolve() : reject(new Error(`zstd could not decompress ${blob}: ${stderr.trim()}`)),
      );
    });
    return { stream: child.stdout, done };
  }
  return { stream: createReadStream(blob), done: Promise.resolve() };
}

function normalize(entryPath: string): string {
  return path.posix.normalize(entryPath.replace(/^\/+/, "")).replace(/\/$/, "") || ".";
}
