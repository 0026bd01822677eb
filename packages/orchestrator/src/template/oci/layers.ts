/**
 * Applies image layers to a root filesystem, bottom first, as a container runtime would: each a
 * tar (plain, gzip or zstd, told by its first bytes), with OCI whiteouts: `.wh.<name>` deletes
 * `<name>` from the layers below, `.wh..wh..opq` empties its directory of what they had.
 */
import { spawn } from "node:child_process";
import { createReadStream, realpathSync, rmSync } from "node:fs";
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
    const target = realInside(rootfs, dir);
    if (!target) continue;
    const children = await readdir(target).catch(() => [] as string[]);
    for (const child of children) {
      const name = dir === "." ? child : `${dir}/${child}`;
      if (!entries.has(name)) await rm(path.join(target, child), { recursive: true, force: true });
    }
  }
  // Second pass: extract, turning whiteouts into deletions.
  layer = await decompressed(blob);
  await pipeline(
    layer.stream,
    tar.x({
      cwd: rootfs,
      preserveOwner: true,
      unlink: true,
      filter: (entryPath) => {
        const name = normalize(entryPath);
        const base = path.posix.basename(name);
        if (base === OPAQUE) return false;
        if (base.startsWith(WHITEOUT)) {
          const victim = path.posix.join(path.posix.dirname(name), base.slice(WHITEOUT.length));
          removeInside(rootfs, victim);
          return false;
        }
        return true;
      },
    }),
  );
  await layer.done;
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

/**
 * The real path of a directory of the rootfs named by a layer, or undefined when it does not
 * exist. Symlinks are resolved first: a layer that made `etc` a link to a host directory must not
 * reach the host through it.
 */
function realInside(rootfs: string, name: string): string | undefined {
  let real: string;
  try {
    real = realpathSync(path.resolve(rootfs, name));
  } catch {
    return undefined;
  }
  const root = realpathSync(rootfs);
  if (real !== root && !real.startsWith(`${root}${path.sep}`)) {
    throw new Error(`layer entry '${name}' points outside the root filesystem`);
  }
  return real;
}

/** Deletes what a whiteout names (synchronously: tar's filter is). */
function removeInside(rootfs: string, name: string): void {
  const parent = realInside(rootfs, path.posix.dirname(name));
  if (parent) rmSync(path.join(parent, path.posix.basename(name)), { recursive: true, force: true });
}
