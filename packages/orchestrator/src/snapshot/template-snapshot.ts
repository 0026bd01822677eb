/**
 * Template snapshots: a sandbox booted from a template with envd ready, checkpointed, so that a
 * create restores it (~0.3 s) instead of booting Node inside gVisor (~0.7 s). One per template and
 * runtime: the key covers everything the saved memory depends on (runsc, the node binary, envd's
 * code and where it is mounted from), so a change of any of them makes a new one.
 */
import { createHash } from "node:crypto";
import { mkdir, readFile, rename, rm, stat } from "node:fs/promises";
import path from "node:path";
import { runCommand } from "@moat/shared";
import { imageExists } from "./image.js";

/** Bump when what a snapshot sandbox looks like changes (spec, mounts, envd flags). */
const FORMAT = 1;

export interface TemplateSnapshot {
  templateID: string;
  /** The checkpoint image. */
  image: string;
  /** The snapshot sandbox's writable layer (mount points runsc made), copied under each restore. */
  upper: string;
  /** The memory size it was booted with; restores need the same. */
  memoryMB: number;
}

export interface SnapshotKeyInput {
  runscBinary: string;
  nodeBinary: string;
  appDir: string;
  pidsLimit: number;
}

export async function snapshotKey(input: SnapshotKeyInput): Promise<string> {
  const hash = createHash("sha256");
  hash.update(JSON.stringify({ FORMAT, ...input, node: process.version }));
  for (const file of [input.runscBinary, input.nodeBinary]) {
    const st = await stat(file);
    hash.update(`${file}:${st.size}:${st.mtimeMs}`);
  }
  hash.update(await readFile(path.join(input.appDir, "packages", "envd", "dist", "envd.mjs")));
  return hash.digest("hex").slice(0, 16);
}

/** `<template dir>/snapshots/<key>`, beside the template's rootfs. */
export function snapshotDir(templateRootfs: string, key: string): string {
  return path.join(path.dirname(templateRootfs), "snapshots", key);
}

export function snapshotPaths(dir: string): { image: string; upper: string } {
  return { image: path.join(dir, "memory"), upper: path.join(dir, "upper") };
}

/** The snapshot in `dir` when it is whole (its image is committed last). */
export async function findSnapshot(
  templateID: string,
  dir: string,
  memoryMB: number,
): Promise<TemplateSnapshot | undefined> {
  const paths = snapshotPaths(dir);
  return (await imageExists(paths.image)) ? { templateID, ...paths, memoryMB } : undefined;
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
