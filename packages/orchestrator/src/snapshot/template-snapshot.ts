/**
 * Template snapshots: a sandbox booted from a template with envd ready, checkpointed, so that a
 * create restores it (~0.3 s) instead of booting Node inside gVisor (~0.7 s). One per template and
 * runtime: the key covers everything the saved memory depends on (runsc, the node binary, envd's
 * code and where it is mounted from), so a change of any of them makes a new one.
 */
import { createHash } from "node:crypto";
import { mkdir, readdir, readFile, realpath, rename, rm, stat, utimes } from "node:fs/promises";
import path from "node:path";
import { runCommand } from "@moat/shared";
import { fileDigest } from "../artifacts/checksum.js";
import { SANDBOX_CAPABILITIES } from "../runtime/oci-spec.js";
import { imageExists } from "./image.js";

/** Bump when what a snapshot sandbox looks like changes (spec, mounts, envd flags). */
const FORMAT = 4;

export interface TemplateSnapshot {
  templateID: string;
  /** The checkpoint image. */
  image: string;
  /** The snapshot sandbox's writable layer (mount points runsc made), copied under each restore. */
  upper: string;
  /** The size it was booted with; restores need the same memory (the pool the same vCPUs). */
  memoryMB: number;
  vcpu: number;
}

export interface SnapshotKeyInput {
  runscBinary: string;
  nodeBinary: string;
  /** The directory sandboxes mount envd from: every file in it counts. */
  envdDir: string;
  pidsLimit: number;
  /**
   * A key every node running the same runtime computes alike (for snapshots in shared storage):
   * the binaries' contents instead of their paths and times. Sandboxes mount them at fixed paths,
   * so where a node keeps them does not matter to a restore.
   */
  portable?: boolean;
}

export async function snapshotKey(input: SnapshotKeyInput): Promise<string> {
  if (input.portable) return portableSnapshotKey(input);
  const hash = createHash("sha256");
  // Real paths: data directories that link one shared runtime share its snapshots.
  const [runsc, node, envdDir] = await Promise.all(
    [input.runscBinary, input.nodeBinary, input.envdDir].map((p) => realpath(p)),
  );
  hash.update(
    JSON.stringify({ FORMAT, runsc, node, envdDir, pidsLimit: input.pidsLimit, v: process.version }),
  );
  // A restore keeps the saved processes' credentials, whatever the spec now grants.
  hash.update(JSON.stringify(SANDBOX_CAPABILITIES));
  for (const file of [runsc!, node!]) {
    const st = await stat(file);
    hash.update(`${st.size}:${st.mtimeMs}`);
  }
  for (const file of await filesUnder(envdDir!)) {
    hash.update(`${path.relative(envdDir!, file)}\0`);
    hash.update(await readFile(file));
  }
  return hash.digest("hex").slice(0, 16);
}

async function portableSnapshotKey(input: SnapshotKeyInput): Promise<string> {
  const hash = createHash("sha256");
  hash.update(JSON.stringify({ FORMAT, portable: 1, pidsLimit: input.pidsLimit, v: process.version }));
  hash.update(JSON.stringify(SANDBOX_CAPABILITIES));
  for (const file of [input.runscBinary, input.nodeBinary]) {
    hash.update(await fileDigest(await realpath(file)));
  }
  const envdDir = await realpath(input.envdDir);
  for (const file of await filesUnder(envdDir)) {
    hash.update(`${path.relative(envdDir, file)}\0`);
    hash.update(await readFile(file));
  }
  return hash.digest("hex").slice(0, 16);
}

/** Every file under `dir`, sorted (a stable order for hashing). */
async function filesUnder(dir: string): Promise<string[]> {
  const files: string[] = [];
  for (const entry of await readdir(dir, { withFileTypes: true })) {
    const file = path.join(dir, entry.name);
    if (entry.isDirectory()) files.push(...(await filesUnder(file)));
    else if (entry.isFile()) files.push(file);
  }
  return files.sort();
}

/** `<template dir>/snapshots/<key>` (beside the base template's rootfs, in a build's directory). */
export function snapshotDir(templateDir: string, key: string): string {
  return path.join(templateDir, "snapshots", key);
}

export function snapshotPaths(dir: string): { image: string; upper: string } {
  return { image: path.join(dir, "memory"), upper: path.join(dir, "upper") };
}

/** The snapshot in `dir` when it is whole (its image is committed last); marks it as used. */
export async function findSnapshot(
  templateID: string,
  dir: string,
  size: { memoryMB: number; vcpu: number },
): Promise<TemplateSnapshot | undefined> {
  const paths = snapshotPaths(dir);
  if (!(await imageExists(paths.image))) return undefined;
  const now = new Date();
  await utimes(dir, now, now).catch(() => undefined);
  return { templateID, ...paths, memoryMB: size.memoryMB, vcpu: size.vcpu };
}

/**
 * Keeps the `keep` most recently used snapshots of a template and removes the others (made by
 * older runtimes or checkouts; ~20 MB each).
 */
export async function pruneSnapshots(current: string, keep = 3): Promise<string[]> {
  const root = path.dirname(current);
  const names = await readdir(root).catch(() => [] as string[]);
  const dirs = await Promise.all(
    names.map(async (name) => {
      const dir = path.join(root, name);
      return { dir, mtime: (await stat(dir).catch(() => undefined))?.mtimeMs ?? 0 };
    }),
  );
  const stale = dirs
    .filter((d) => d.dir !== current)
    .sort((a, b) => b.mtime - a.mtime)
    .slice(Math.max(0, keep - 1));
  await Promise.all(stale.map((d) => rm(d.dir, { recursive: true, force: true })));
  return stale.map((d) => d.dir);
}

/** Keeps the snapshot sandbox's writable layer (copied before the image is committed). */
export async function saveUpper(from: string, dir: string): Promise<void> {
  const { upper } = snapshotPaths(dir);
  await rm(`${upper}.partial`, { recursive: true, force: true });
  // cp -a: owners, modes and overlay xattrs as they are.
  await runCommand(["cp", "-a", from, `${upper}.partial`]);
  await rm(upper, { recursive: true, force: true });
  await rename(`${upper}.partial`, upper);
}

/** Seeds a new sandbox's writable layer from the snapshot's. */
export async function seedUpper(snapshot: TemplateSnapshot, upper: string): Promise<void> {
  await mkdir(upper, { recursive: true });
  await runCommand(["cp", "-a", `${snapshot.upper}/.`, upper]);
}
