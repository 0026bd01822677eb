/**
 * A team's volumes on this node. Each is a sparse ext4 image of its size,
 * `<dataDir>/volumes/<teamID>/<volumeID>/volume.img`, loop-mounted `nosuid,nodev` at `…/fs` on the
 * node while the node runs and bind-mounted read-write into the sandboxes that name it (the OCI
 * spec's mounts, through runsc's gofer, which shares file access by default: every sandbox and the
 * content calls see each other's writes at once). Being a file system of its own, a volume bounds
 * what a tenant can put on the host's disk (past its size a write is ENOSPC, inside a sandbox and
 * through the API alike), and nothing in it can be a hard link to a host file. Its root directory
 * belongs to the sandboxes' `user` (1000:1000), so that `user` and the content API both write it.
 *
 * The data directory is root's alone (0700), so no host user reaches a volume's files. Volumes stay
 * mounted on the node once used (sandboxes that started with one keep their own mount of it in
 * runsc's namespace); `close` unmounts them all when the node stops.
 *
 * With a shared artifact store a volume moves between nodes: `release` (no sandbox of this node
 * mounts it) publishes its image, compressed, as a generation the API counts, and removes it here;
 * `create` with that generation on another node takes it from the store. The API decides the move
 * under the team's lock, so one node at a time holds (and mounts) a volume's image.
 */
import { constants } from "node:fs";
import { open, rm, stat, statfs } from "node:fs/promises";
import path from "node:path";
import { type Logger, makePrivateDir, runCommand } from "@moat/shared";
import type { ArtifactStore } from "../artifacts/store.js";
import { packFiles, unpackFiles, waitForDetached } from "../sandbox/relocation.js";
import { isMountPoint, MOUNT_OPTIONS, makeImage, unmount } from "./disk.js";
import { mountsUnder } from "./overlay.js";
import { VolumeFiles } from "./volume-files.js";

/** The sandboxes' `user` in moat's templates: what volumes and the files made through the API belong to. */
export const VOLUME_OWNER = { uid: 1000, gid: 1000 };
/** Smallest and largest volume, in MiB (ext4 needs room for its journal; images are sparse). */
export const MIN_VOLUME_SIZE_MB = 16;
export const MAX_VOLUME_SIZE_MB = 1024 * 1024;

const TEAM_ID = /^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$/;
const VOLUME_ID = /^[a-z0-9]{1,63}$/;

export interface VolumeRef {
  teamID: string;
  volumeID: string;
}

export interface VolumeUsage {
  sizeBytes: number;
  usedBytes: number;
}

/** The volume is not on this node (never made here, or deleted). */
export class VolumeNotFoundError extends Error {
  constructor(ref: VolumeRef) {
    super(`volume '${ref.volumeID}' of team '${ref.teamID}' is not on this node`);
    this.name = "VolumeNotFoundError";
  }
}

/** A sandbox on this node still mounts the volume. */
export class VolumeInUseError extends Error {
  constructor(ref: VolumeRef, sandboxIDs: string[]) {
    super(
      `volume '${ref.volumeID}' is mounted by sandbox${sandboxIDs.length > 1 ? "es" : ""} ${sandboxIDs.join(", ")}; kill them first`,
    );
    this.name = "VolumeInUseError";
  }
}

export class InvalidVolumeError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "InvalidVolumeError";
  }
}

/** Checks a team and volume id before either names a directory. */
export function checkVolumeRef(ref: VolumeRef): void {
  if (!TEAM_ID.test(ref.teamID)) throw new InvalidVolumeError(`team id '${ref.teamID}' is not valid`);
  if (!VOLUME_ID.test(ref.volumeID)) throw new InvalidVolumeError(`volume id '${ref.volumeID}' is not valid`);
}

export interface VolumeStoreOptions {
  dataDir: string;
  logger: Logger;
  /** Owner of volume roots and of what the content calls make without one (tests: themselves). */
  owner?: { uid: number; gid: number };
  /** Shared artifact storage, through which volumes move between nodes; unset: they stay here. */
  artifacts?: ArtifactStore;
}

/** Where generation `generation` of a released volume is published. */
export function volumeKey(ref: VolumeRef, generation: number): string {
  return `volumes/${ref.teamID}/${ref.volumeID}/volume-${generation}.tar.zst`;
}

/** A move that cannot be done here: no artifact store, or no such published volume. */
export class VolumeMoveError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "VolumeMoveError";
  }
}

export class VolumeStore {
  private readonly root: string;
  private readonly owner: { uid: number; gid: number };
  /** One mount, create or delete at a time per volume. */
  private readonly locks = new Map<string, Promise<unknown>>();

  constructor(private readonly options: VolumeStoreOptions) {
    this.root = path.join(options.dataDir, "volumes");
    this.owner = options.owner ?? VOLUME_OWNER;
  }

  paths(ref: VolumeRef): { dir: string; image: string; mountPoint: string } {
    checkVolumeRef(ref);
    const dir = path.join(this.root, ref.teamID, ref.volumeID);
    return { dir, image: path.join(dir, "volume.img"), mountPoint: path.join(dir, "fs") };
  }

  /**
   * Makes the volume (an image of `sizeMB`, its root `user`'s) and mounts it; an existing one is
   * kept. `fromGeneration`: the volume moves here: its image is taken from the artifact store (as
   * `release` published it on its previous node), and the published copy removed once mounted.
   */
  async create(ref: VolumeRef, sizeMB: number, fromGeneration = 0): Promise<VolumeUsage> {
    if (!Number.isInteger(sizeMB) || sizeMB < MIN_VOLUME_SIZE_MB || sizeMB > MAX_VOLUME_SIZE_MB) {
      throw new InvalidVolumeError(
        `a volume's size must be from ${MIN_VOLUME_SIZE_MB} to ${MAX_VOLUME_SIZE_MB} MiB, got ${sizeMB}`,
      );
    }
    const { dir, image } = this.paths(ref);
    await this.locked(ref, async () => {
      if (await exists(image)) return;
      await makePrivateDir(this.root);
      await makePrivateDir(path.dirname(dir));
      await makePrivateDir(dir);
      await rm(`${image}.partial`, { force: true });
      if (fromGeneration > 0) {
        await this.fetch(ref, fromGeneration);
        return;
      }
      await makeImage(image, sizeMB, { label: "moat-volume", rootOwner: this.owner });
      try {
        const mountPoint = await this.mount(ref);
        // mkfs's lost+found is no file of the tenant's.
        await rm(path.join(mountPoint, "lost+found"), { recursive: true, force: true });
      } catch (err) {
        await unmount(this.paths(ref).mountPoint).catch(() => undefined);
        await rm(dir, { recursive: true, force: true });
        throw err;
      }
    });
    return this.usage(ref);
  }

  /**
   * Removes the volume and its files. `inUse` names the sandboxes that mount it, asked under the
   * volume's lock: a sandbox's boot mounts it under the same lock, so none can start on it midway.
   */
  async remove(ref: VolumeRef, inUse: () => string[]): Promise<void> {
    const { dir, mountPoint } = this.paths(ref);
    await this.locked(ref, async () => {
      const users = inUse();
      if (users.length > 0) throw new VolumeInUseError(ref, users);
      await unmount(mountPoint);
      await rm(dir, { recursive: true, force: true });
    });
  }

  /**
   * Publishes the volume's image to the artifact store as `generation` and removes it from this
   * node, so that another node takes it (`create` with that generation). `inUse` as for `remove`:
   * a volume a sandbox here mounts (running, paused, starting) stays.
   */
  async release(ref: VolumeRef, inUse: () => string[], generation: number): Promise<void> {
    const store = this.options.artifacts;
    if (!store) throw new VolumeMoveError("this node has no artifact store; its volumes stay on it");
    if (!Number.isInteger(generation) || generation < 1)
      throw new InvalidVolumeError("a release needs a generation");
    const { dir, image, mountPoint } = this.paths(ref);
    await this.locked(ref, async () => {
      const users = inUse();
      if (users.length > 0) throw new VolumeInUseError(ref, users);
      if (!(await exists(image))) throw new VolumeNotFoundError(ref);
      await unmount(mountPoint);
      await waitForDetached(dir);
      const archive = path.join(dir, `volume-${generation}.tar.zst`);
      try {
        await packFiles(dir, [path.basename(image)], archive);
        await store.putFile(volumeKey(ref, generation), archive);
      } catch (err) {
        await rm(archive, { force: true });
        throw err;
      }
      await rm(dir, { recursive: true, force: true });
    });
    this.options.logger.info({ ...ref, generation }, "volume released to the artifact store");
  }

  /** Takes a released volume from the store into its directory (made, empty) and mounts it. */
  private async fetch(ref: VolumeRef, generation: number): Promise<void> {
    const store = this.options.artifacts;
    const { dir } = this.paths(ref);
    if (!store) throw new VolumeMoveError("this node has no artifact store; a volume cannot move to it");
    const archive = path.join(dir, `volume-${generation}.tar.zst`);
    try {
      if (!(await store.getFile(volumeKey(ref, generation), archive))) {
        throw new VolumeMoveError(
          `volume '${ref.volumeID}' generation ${generation} is not in the artifact store`,
        );
      }
      await unpackFiles(archive, dir);
      await rm(archive, { force: true });
      await this.mount(ref);
    } catch (err) {
      await unmount(this.paths(ref).mountPoint).catch(() => undefined);
      await rm(dir, { recursive: true, force: true });
      throw err;
    }
    await store
      .delete(volumeKey(ref, generation))
      .catch((err: unknown) =>
        this.options.logger.warn(
          { err, ...ref, generation },
          "removing a taken volume from the store failed",
        ),
      );
    this.options.logger.info({ ...ref, generation }, "volume taken from the artifact store");
  }

  /** The volume's mount point on the node, mounted now if it was not (a sandbox's boot). */
  mountPoint(ref: VolumeRef): Promise<string> {
    return this.locked(ref, () => this.mount(ref));
  }

  async usage(ref: VolumeRef): Promise<VolumeUsage> {
    const fs = await statfs(await this.mountPoint(ref));
    return { sizeBytes: fs.blocks * fs.bsize, usedBytes: (fs.blocks - fs.bfree) * fs.bsize };
  }

  /**
   * Runs `work` on the volume's files with its root held open. The root is checked to be the
   * volume's own file system (not the empty directory under it), so that nothing lands on the
   * node's disk if the volume came unmounted.
   */
  async withFiles<T>(ref: VolumeRef, work: (files: VolumeFiles) => Promise<T>): Promise<T> {
    const mountPoint = await this.mountPoint(ref);
    const root = await open(mountPoint, constants.O_RDONLY | constants.O_DIRECTORY | constants.O_NOFOLLOW);
    try {
      const [held, parent] = await Promise.all([root.stat(), stat(path.dirname(mountPoint))]);
      if (held.dev === parent.dev)
        throw new Error(`volume '${ref.volumeID}' is not mounted at ${mountPoint}`);
      return await work(new VolumeFiles(root, { defaultOwner: this.owner }));
    } finally {
      await root.close();
    }
  }

  /** Unmounts every volume (the node stops); sandboxes still running keep their own mounts. */
  async close(): Promise<void> {
    for (const mountPoint of await mountsUnder(this.root)) {
      await unmount(mountPoint).catch((err: unknown) =>
        this.options.logger.warn({ err, mountPoint }, "unmounting a volume failed"),
      );
    }
  }

  private async mount(ref: VolumeRef): Promise<string> {
    const { image, mountPoint } = this.paths(ref);
    if (!(await exists(image))) throw new VolumeNotFoundError(ref);
    if (await isMountPoint(mountPoint)) return mountPoint;
    await makePrivateDir(mountPoint);
    await runCommand(["mount", "-o", MOUNT_OPTIONS, image, mountPoint], { timeoutMs: 30_000 });
    return mountPoint;
  }

  private locked<T>(ref: VolumeRef, work: () => Promise<T>): Promise<T> {
    const key = `${ref.teamID}/${ref.volumeID}`;
    const previous = this.locks.get(key) ?? Promise.resolve();
    const next = previous.then(work, work);
    const settled = next.catch(() => undefined);
    this.locks.set(key, settled);
    void settled.then(() => {
      if (this.locks.get(key) === settled) this.locks.delete(key);
    });
    return next;
  }
}

async function exists(file: string): Promise<boolean> {
  return (await stat(file).catch(() => undefined)) !== undefined;
}
