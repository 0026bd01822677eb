/**
 * Paused sandboxes on any node: a pause publishes everything a resume needs to the shared artifact
 * store (artifacts/store.ts), and a node asked to resume a sandbox it does not hold
 * fetches those objects and unpacks them into a sandbox directory of its own.
 *
 * A published pause is two objects: a manifest with the sandbox's record (config, tokens, egress
 * rules, metadata; republished when its egress rules change while paused), and a zstd-compressed
 * tar of what a resume reads from its directory: its memory image when it has one, and its writable
 * layer (the sparse `disk.img`, kept sparse by tar, or the `upper` directory with its owners,
 * modes and overlay xattrs). It is keyed by the sandbox id and the pause's generation (counted per
 * sandbox, carried in the record from node to node): a resume names the generation it expects, so
 * an object of an earlier pause left behind by a failed delete is never restored.
 *
 * The packing is the smallest this needs (GNU tar and Debian's `zstd`); a shared packing helper in
 * artifacts/ may replace it.
 */
import { randomBytes } from "node:crypto";
import { chmod, mkdir, readFile, rm, stat } from "node:fs/promises";
import path from "node:path";
import { type Logger, makePrivateDir, makeTreePrivate, runCommand, writePrivateFile } from "@moat/shared";
import type { ArtifactStore } from "../artifacts/store.js";
import { diskPaths, loopDevicesUnder } from "../storage/disk.js";
import { rootfsPaths } from "../storage/overlay.js";
import { memoryImagePath, type SandboxRecord } from "./record.js";

/** Format of the published manifest; a node refuses one it does not know. */
const FORMAT = 1;
/** A big disk takes a while to compress or unpack; past this the publish or fetch fails. */
const PACK_TIMEOUT_MS = 30 * 60_000;
/** zstd at a low level on every core: fast, and most of a disk image is holes or zeros anyway. */
const ZSTD = "zstd -3 -T0 -q";
/** Owners, modes, xattrs (overlay whiteouts and opaque dirs) as they are, holes kept. */
const TAR_FLAGS = ["--sparse", "--numeric-owner", "--xattrs", "--xattrs-include=*", "--acls"];

/** What a published pause is: the record a resume starts from, beside the archive of its files. */
export interface PublishedManifest {
  format: number;
  sandboxID: string;
  generation: number;
  /** The key of the runtime that saved the memory image; another runtime boots from the files. */
  runtimeKey?: string;
  record: SandboxRecord;
}

/**
 * Where pause `generation` of a sandbox is published: the archive of its files, and the manifest
 * (written last: a pause is published once its manifest is there).
 */
export function pausedKeys(sandboxID: string, generation: number): { archive: string; manifest: string } {
  const base = `sandboxes/${sandboxID}/paused-${generation}`;
  return { archive: `${base}.tar.zst`, manifest: `${base}.json` };
}

/** What a node holding the store does with paused sandboxes. */
export class PausedSandboxStore {
  constructor(
    private readonly options: {
      store: ArtifactStore;
      dataDir: string;
      logger: Logger;
      runtimeKey?: string;
    },
  ) {}

  /** Scratch space for archives on their way to or from the store (emptied at every start). */
  get scratch(): string {
    return path.join(this.options.dataDir, "relocate");
  }

  async clearScratch(): Promise<void> {
    await rm(this.scratch, { recursive: true, force: true });
  }

  /**
   * Publishes the paused sandbox in `dir` (nothing mounted: its runtime released) as pause
   * `record.pauseGeneration`. `record` is what a resume elsewhere starts from (state paused).
   */
  async publish(dir: string, record: SandboxRecord): Promise<void> {
    const keys = pausedKeys(record.sandboxID, generationOf(record));
    if (record.diskSizeMB > 0) await waitForDetached(dir);
    const work = await this.workDir();
    try {
      const members = await existing(dir, [
        ...(record.memory ? [path.basename(memoryImagePath(dir))] : []),
        record.diskSizeMB > 0
          ? path.basename(diskPaths(dir).image)
          : path.relative(dir, rootfsPaths(dir, false).upper),
      ]);
      const archive = path.join(work, "paused.tar.zst");
      await packFiles(dir, members, archive);
      await this.options.store.putFile(keys.archive, archive);
    } finally {
      await rm(work, { recursive: true, force: true });
    }
    await this.publishRecord(record);
  }

  /** Publishes (again) the record of a published pause: its egress rules changed while paused. */
  async publishRecord(record: SandboxRecord): Promise<void> {
    const generation = generationOf(record);
    const manifest: PublishedManifest = {
      format: FORMAT,
      sandboxID: record.sandboxID,
      generation,
      ...(this.options.runtimeKey ? { runtimeKey: this.options.runtimeKey } : {}),
      record: { ...record, state: "paused", published: generation },
    };
    const work = await this.workDir();
    try {
      const file = path.join(work, "manifest.json");
      await writePrivateFile(file, JSON.stringify(manifest));
      await this.options.store.putFile(pausedKeys(record.sandboxID, generation).manifest, file);
    } finally {
      await rm(work, { recursive: true, force: true });
    }
  }

  /**
   * Fetches pause `generation` of `sandboxID` into `dir` (which must not exist) and answers its
   * record, ready for a resume on this node: a memory image saved by another runtime is dropped
   * (the resume boots from the files). Undefined when the store has no such pause.
   */
  async fetch(sandboxID: string, generation: number, dir: string): Promise<SandboxRecord | undefined> {
    const keys = pausedKeys(sandboxID, generation);
    const work = await this.workDir();
    try {
      const manifestFile = path.join(work, "manifest.json");
      if (!(await this.options.store.getFile(keys.manifest, manifestFile))) return undefined;
      const manifest = JSON.parse(await readFile(manifestFile, "utf8")) as PublishedManifest;
      const { record } = manifest;
      if (
        manifest.format !== FORMAT ||
        manifest.sandboxID !== sandboxID ||
        manifest.generation !== generation ||
        record?.sandboxID !== sandboxID ||
        record.pauseGeneration !== generation ||
        // Never published (volumes live on their node): one that names some is not a node's.
        (record.volumeMounts?.length ?? 0) > 0
      ) {
        throw new Error(`published pause ${keys.manifest} describes another sandbox or pause`);
      }
      const archive = path.join(work, "paused.tar.zst");
      if (!(await this.options.store.getFile(keys.archive, archive))) return undefined;
      await mkdir(path.dirname(dir), { recursive: true, mode: 0o700 });
      await mkdir(dir, { mode: 0o700 });
      try {
        await unpackFiles(archive, dir);
        const image = memoryImagePath(dir);
        if (record.memory && (await exists(image))) await makeTreePrivate(image);
        else record.memory = false;
        const { runtimeKey } = this.options;
        if (record.memory && manifest.runtimeKey && runtimeKey && manifest.runtimeKey !== runtimeKey) {
          this.options.logger.warn(
            { sandboxID, generation },
            "the paused sandbox's memory was saved by another runtime; its resume boots from its files",
          );
          await rm(image, { recursive: true, force: true });
          record.memory = false;
        }
        return record;
      } catch (err) {
        await rm(dir, { recursive: true, force: true });
        throw err;
      }
    } finally {
      await rm(work, { recursive: true, force: true });
    }
  }

  /** Removes a published pause (its manifest first); one that is gone already is not an error. */
  async remove(sandboxID: string, generation: number): Promise<void> {
    const keys = pausedKeys(sandboxID, generation);
    await this.options.store.delete(keys.manifest);
    await this.options.store.delete(keys.archive);
  }

  private async workDir(): Promise<string> {
    await makePrivateDir(this.scratch);
    const work = path.join(this.scratch, randomBytes(6).toString("hex"));
    await mkdir(work, { mode: 0o700 });
    return work;
  }
}

function generationOf(record: SandboxRecord): number {
  const generation = record.pauseGeneration ?? 0;
  if (!Number.isInteger(generation) || generation < 1)
    throw new Error("a published pause needs a generation");
  return generation;
}

/**
 * Packs `members` of `dir` (sparse files kept sparse; owners, modes and xattrs kept) into the
 * zstd tar `archive`, readable by root only (a directory store copies the mode).
 */
export async function packFiles(dir: string, members: string[], archive: string): Promise<void> {
  await runCommand(
    [
      "tar",
      "--create",
      ...TAR_FLAGS,
      `--use-compress-program=${ZSTD}`,
      "--file",
      archive,
      "-C",
      dir,
      "--files-from=/dev/null",
      ...members,
    ],
    { timeoutMs: PACK_TIMEOUT_MS },
  );
  await chmod(archive, 0o600);
}

/** Unpacks a `packFiles` archive into `dir` as it was packed. */
export async function unpackFiles(archive: string, dir: string): Promise<void> {
  await runCommand(
    [
      "tar",
      "--extract",
      ...TAR_FLAGS,
      "--same-owner",
      "--same-permissions",
      `--use-compress-program=${ZSTD}`,
      "--file",
      archive,
      "-C",
      dir,
    ],
    { timeoutMs: PACK_TIMEOUT_MS },
  );
}

/** How long a pause waits for its disk to be let go of before it is left unpublished. */
const DETACH_TIMEOUT_MS = 30_000;

/**
 * Waits until no loop device backs the sandbox's disk image: an unmount that had to be lazy (the
 * runtime still exiting) lets go of the file system only later, and the image is whole only then.
 */
export async function waitForDetached(dir: string): Promise<void> {
  const deadline = Date.now() + DETACH_TIMEOUT_MS;
  while ((await loopDevicesUnder(dir)).length > 0) {
    if (Date.now() > deadline) throw new Error("the sandbox's disk is still attached; not publishing it");
    await new Promise((r) => setTimeout(r, 50));
  }
}

async function existing(dir: string, names: string[]): Promise<string[]> {
  const found: string[] = [];
  for (const name of names) if (await exists(path.join(dir, name))) found.push(name);
  return found;
}

async function exists(file: string): Promise<boolean> {
  return (await stat(file).catch(() => undefined)) !== undefined;
}
