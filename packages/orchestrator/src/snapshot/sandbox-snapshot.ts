/**
 * Snapshots of users' sandboxes on disk: what a sandbox was at one moment (memory and processes,
 * files, settings), which new sandboxes start from. A fork's is ephemeral (removed once its forks
 * started, and at every start); a named one stays until it is deleted.
 *
 *   <dataDir>/snapshots/<id>/snapshot.json   the manifest (0600: the source's env vars and token)
 *   <dataDir>/snapshots/<id>/memory/         the checkpoint image (0600)
 *   <dataDir>/snapshots/<id>/disk.img        the writable layer's disk, or upper/ (storage/layer-copy.ts)
 *
 * A snapshot is made in `<id>.partial` and renamed into place once whole: a directory under its
 * final name is always whole, and a partial one is removed at the next start.
 */
import type { Dirent } from "node:fs";
import { lstat, readdir, readFile, rename, rm } from "node:fs/promises";
import path from "node:path";
import { makePrivateDir, makeTreePrivate, writePrivateFile } from "@moat/shared";
import type { SandboxRecord } from "../sandbox/record.js";

/** Snapshot ids: chosen by the API (a UUID) or the node (`fork-…`), safe as a directory name. */
export const SNAPSHOT_ID = /^[a-z0-9][a-z0-9-]{0,63}$/;

/**
 * What a sandbox started from a snapshot gets of its source: the source's record without its
 * ids, token and the state of its run. Fields the record gains later (volumes, network rules)
 * come along without a change here.
 */
export type SnapshotConfig = Omit<
  SandboxRecord,
  | "sandboxID"
  | "envdAccessToken"
  | "dir"
  | "slotIndex"
  | "lifecycleID"
  | "startTime"
  | "endTime"
  | "state"
  | "kind"
  | "memory"
  | "startKind"
  | "snapshotID"
>;

export function snapshotConfigOf(record: SandboxRecord): SnapshotConfig {
  const {
    sandboxID: _sandboxID,
    envdAccessToken: _token,
    dir: _dir,
    slotIndex: _slot,
    lifecycleID: _lifecycle,
    startTime: _start,
    endTime: _end,
    state: _state,
    kind: _kind,
    memory: _memory,
    startKind: _startKind,
    snapshotID: _snapshot,
    ...config
  } = record;
  return config;
}

export interface SandboxSnapshot {
  snapshotID: string;
  sourceSandboxID: string;
  teamID: string;
  config: SnapshotConfig;
  /**
   * The source's envd access token when it was taken ("" for none): the snapshot's envd holds it,
   * and a sandbox started from it proves it to /init to get its own.
   */
  accessToken: string;
  /** The runtime its memory image was made by (snapshot/template-snapshot.ts snapshotKey). */
  runtimeKey?: string;
  /** Removed once its forks started, and at every start of the node. */
  ephemeral: boolean;
  createdAt: string;
  /** Bytes it takes on the node's disk. */
  sizeBytes: number;
}

export function snapshotsRoot(dataDir: string): string {
  return path.join(dataDir, "snapshots");
}

export function snapshotPath(dataDir: string, snapshotID: string): string {
  return path.join(snapshotsRoot(dataDir), snapshotID);
}

/** The parts of a snapshot in its directory `dir` (or its partial directory). */
export function snapshotParts(dir: string): { manifest: string; image: string; files: string } {
  return { manifest: path.join(dir, "snapshot.json"), image: path.join(dir, "memory"), files: dir };
}

/** A fresh partial directory for the snapshot (one a crash left is cleared first). */
export async function beginSnapshot(dataDir: string, snapshotID: string): Promise<string> {
  const partial = `${snapshotPath(dataDir, snapshotID)}.partial`;
  await rm(partial, { recursive: true, force: true });
  await makePrivateDir(snapshotsRoot(dataDir));
  await makePrivateDir(partial);
  return partial;
}

/** Writes the manifest and renames the partial directory into place (the commit point). */
export async function commitSnapshot(
  dataDir: string,
  partial: string,
  snapshot: SandboxSnapshot,
): Promise<void> {
  const { manifest, image } = snapshotParts(partial);
  await makeTreePrivate(image);
  await writePrivateFile(manifest, `${JSON.stringify(snapshot, null, 2)}\n`);
  await rename(partial, snapshotPath(dataDir, snapshot.snapshotID));
}

export async function removeSnapshotFiles(dataDir: string, snapshotID: string): Promise<void> {
  const dir = snapshotPath(dataDir, snapshotID);
  await rm(`${dir}.partial`, { recursive: true, force: true });
  await rm(dir, { recursive: true, force: true });
}

/**
 * The whole snapshots on disk. Partial ones (a crash while one was made) and ephemeral ones (a
 * crash during a fork) are removed; so is a directory without a readable manifest.
 */
export async function loadSnapshots(
  dataDir: string,
): Promise<{ kept: SandboxSnapshot[]; removed: string[] }> {
  const root = snapshotsRoot(dataDir);
  const kept: SandboxSnapshot[] = [];
  const removed: string[] = [];
  const names = await entries(root);
  for (const entry of names) {
    const dir = path.join(root, entry.name);
    const snapshot = entry.isDirectory() ? await readManifest(dir) : undefined;
    if (snapshot && !snapshot.ephemeral && snapshot.snapshotID === entry.name) {
      kept.push(snapshot);
      continue;
    }
    await rm(dir, { recursive: true, force: true });
    removed.push(entry.name);
  }
  return { kept, removed };
}

async function readManifest(dir: string): Promise<SandboxSnapshot | undefined> {
  try {
    return JSON.parse(await readFile(snapshotParts(dir).manifest, "utf8")) as SandboxSnapshot;
  } catch {
    return undefined;
  }
}

/** Bytes the files under `dir` take on disk (allocated blocks: a sparse disk image counts what it holds). */
export async function diskUsage(dir: string): Promise<number> {
  const st = await lstat(dir).catch(() => undefined);
  if (!st) return 0;
  let total = st.blocks * 512;
  if (st.isDirectory()) {
    for (const entry of await entries(dir)) total += await diskUsage(path.join(dir, entry.name));
  }
  return total;
}

async function entries(dir: string): Promise<Dirent[]> {
  return readdir(dir, { withFileTypes: true }).catch(() => [] as Dirent[]);
}
