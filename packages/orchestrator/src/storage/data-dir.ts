/**
 * The node's part of the data directory is root's alone: sandbox records (access tokens, env vars),
 * writable layers and disks, memory images, template layers and snapshots, sandbox snapshots,
 * pulled image blobs and uploaded build files. New files are made private where they are written; this tightens what an
 * earlier version (or an operator) left open, at every start. The files inside root filesystems
 * (template layers, a snapshot's writable layer) keep their modes: the sandboxes see them.
 */
import type { Dirent } from "node:fs";
import { chmod, lstat, readdir } from "node:fs/promises";
import path from "node:path";
import { makeDataDirPrivate, makePrivateDir, makeTreePrivate } from "@moat/shared";

export async function makeNodeDataPrivate(dataDir: string): Promise<void> {
  await makeDataDirPrivate(dataDir);
  const sandboxes = path.join(dataDir, "sandboxes");
  const templates = path.join(dataDir, "templates");
  const cache = path.join(dataDir, "cache");
  const snapshots = path.join(dataDir, "snapshots");
  await Promise.all([sandboxes, templates, cache, snapshots].map((dir) => makePrivateDir(dir)));
  await makeTreePrivate(cache);
  await makeTreePrivate(path.join(templates, "downloads"));

  for (const dir of await subdirs(sandboxes)) {
    await makeDirEntriesPrivate(dir);
    await makeTreePrivate(path.join(dir, "memory"));
    await makeTreePrivate(path.join(dir, "memory.partial"));
    await makeTreePrivate(path.join(dir, "bundle"));
  }
  // A sandbox's snapshot: its manifest (the source's env vars and token), memory and disk.
  for (const dir of await subdirs(snapshots)) {
    await makeDirEntriesPrivate(dir);
    await makeTreePrivate(path.join(dir, "memory"));
  }
  for (const dir of await subdirs(path.join(templates, "layers"))) await makeDirEntriesPrivate(dir);
  // Volumes: their images 0600, the directories above their file systems 0700 (storage/volumes.ts).
  const volumes = path.join(dataDir, "volumes");
  if (await lstat(volumes).catch(() => undefined)) await chmod(volumes, 0o700);
  for (const team of await subdirs(volumes)) {
    await chmod(team, 0o700);
    for (const dir of await subdirs(team)) await makeDirEntriesPrivate(dir);
  }
  // A build's directory (build.json: its ENV values) and the base template's, with their snapshots'
  // memory images (the template's start command's memory).
  const builds = await subdirs(path.join(templates, "builds"));
  const bases = await subdirs(path.join(templates, "base"));
  for (const dir of [...builds, ...bases]) {
    await makeDirEntriesPrivate(dir);
    for (const snapshot of await subdirs(path.join(dir, "snapshots"))) {
      await chmod(snapshot, 0o700);
      await makeTreePrivate(path.join(snapshot, "memory"));
    }
  }
}

/** Directories whose mode is a sandbox's "/" (or the overlay's own): never changed. */
const ROOT_FILESYSTEMS = new Set(["rootfs", "upper", "work", "fs"]);

/** `dir` 0700 and its plain files 0600; subdirectories 0700 but not entered. */
async function makeDirEntriesPrivate(dir: string): Promise<void> {
  await chmod(dir, 0o700);
  for (const entry of await entries(dir)) {
    const file = path.join(dir, entry.name);
    if (ROOT_FILESYSTEMS.has(entry.name)) continue;
    if (entry.isDirectory()) await chmod(file, 0o700);
    else if (entry.isFile()) await chmod(file, 0o600);
  }
}

/** Real subdirectories of `dir` (symlinks to a shared cache are not followed). */
async function subdirs(dir: string): Promise<string[]> {
  return (await entries(dir)).filter((e) => e.isDirectory()).map((e) => path.join(dir, e.name));
}

/** The entries of `dir`; none when it is missing or a symlink (a shared cache is not ours). */
async function entries(dir: string): Promise<Dirent[]> {
  if (!(await lstat(dir).catch(() => undefined))?.isDirectory()) return [];
  return readdir(dir, { withFileTypes: true }).catch(() => []);
}
