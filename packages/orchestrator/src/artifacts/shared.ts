/**
 * Templates and named snapshots on any node: what a node makes is published to the shared store,
 * and what a create names but the node lacks is fetched into its cache on demand.
 *
 *   templates/layers/<key>.tar.zst                          a layer (its directory: fs/ and layer.json)
 *   templates/builds/<buildID>/build.json                   the manifest, put last: the commit point
 *   templates/builds/<buildID>/snapshots/<key>.tar.zst      its template snapshot made by runtime <key>
 *   snapshots/<snapshotID>.tar.zst                          a named snapshot (manifest, memory, files)
 *
 * A template snapshot is keyed by the runtime that made it (portableSnapshotKey: the contents of
 * runsc and node, envd's code, the limits — no host paths), so nodes running the same moat
 * share one; a node of another runtime finds none of its key, boots cold, and makes and publishes
 * its own. Layers are content-keyed per team by the builder, so each is put once.
 */
import { randomBytes } from "node:crypto";
import { mkdir, readFile, rename, rm, stat } from "node:fs/promises";
import path from "node:path";
import type { Logger } from "@moat/shared";
import { removeTree, writeFileAtomic } from "../host/files.js";
import {
  diskUsage,
  type SandboxSnapshot,
  SNAPSHOT_ID,
  snapshotParts,
  snapshotPath,
  snapshotsRoot,
} from "../snapshot/sandbox-snapshot.js";
import { snapshotDir, snapshotPaths } from "../snapshot/template-snapshot.js";
import type { BuildManifest, TemplateStore } from "../template/store.js";
import { ArtifactCache, artifactsDir } from "./cache.js";
import { packDirectory, unpackArchive } from "./pack.js";
import type { ArtifactStore } from "./store.js";

const LAYER_KEY = /^[0-9a-f]{32}$/;
const BUILD_ID = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;
const BASE_ROOTFS = /\/templates\/base\/([0-9a-f]+)\/rootfs$/;
const LAYER_FILES = /\/templates\/layers\/([0-9a-f]{32})\/fs$/;

export interface SharedArtifactsOptions {
  store: ArtifactStore;
  templates: TemplateStore;
  dataDir: string;
  /** The node's template snapshot key (unset: snapshots are off, none is published or fetched). */
  snapshotKey?: string;
  cacheBytes: number;
  logger: Logger;
}

/** What the node tells the cache about its sandboxes (set once the manager exists). */
export interface SharedArtifactsHooks {
  /** Builds a sandbox of this node (running, paused, starting) was made from. */
  buildsInUse(): Set<string>;
  /** Forgets a build (snapshot, warm pool), removes its files and the layers nothing else uses. */
  removeBuild(buildID: string): Promise<void>;
  /** Removes a fetched named snapshot's local copy. */
  removeSnapshot(snapshotID: string): Promise<void>;
}

export class SharedArtifacts {
  readonly cache: ArtifactCache;
  private hooks: SharedArtifactsHooks | undefined;

  constructor(readonly options: SharedArtifactsOptions) {
    this.cache = new ArtifactCache({
      file: path.join(artifactsDir(options.dataDir), "cache.json"),
      limitBytes: options.cacheBytes,
      logger: options.logger,
      inUse: (id) => this.inUse(id),
      remove: (id) => this.removeLocal(id),
    });
  }

  get store(): ArtifactStore {
    return this.options.store;
  }

  attach(hooks: SharedArtifactsHooks): void {
    this.hooks = hooks;
  }

  /** At start: the cache's index; downloads a crash interrupted are removed. */
  async load(): Promise<void> {
    await rm(this.tmpDir(), { recursive: true, force: true });
    await mkdir(this.tmpDir(), { recursive: true, mode: 0o700 });
    await this.cache.load();
  }

  // ---- template builds ----

  /**
   * Publishes a finished build: its layers the store lacks, its snapshot when it has one, then
   * its manifest (from then on other nodes can start it).
   */
  async publishBuild(buildID: string): Promise<void> {
    const { templates, logger } = this.options;
    const manifest = templates.readManifest(buildID);
    if (!manifest) throw new Error(`build ${buildID} is not on this node`);
    const started = performance.now();
    await this.publishLayers(manifest.layers);
    await this.publishTemplateSnapshot(buildID);
    const file = this.tempFile("build.json");
    try {
      await writeManifestCopy(file, manifest);
      await this.store.putFile(buildKey(buildID), file);
    } finally {
      await rm(file, { force: true });
    }
    logger.info(
      { buildID, layers: manifest.layers.length, ms: Math.round(performance.now() - started) },
      "template build published to shared storage",
    );
  }

  /** Publishes the build's template snapshot of this node's runtime, when it has one. */
  async publishTemplateSnapshot(buildID: string): Promise<boolean> {
    const { snapshotKey, templates } = this.options;
    if (!snapshotKey || !BUILD_ID.test(buildID) || buildID === "base") return false;
    const dir = snapshotDir(templates.buildDir(buildID), snapshotKey);
    if (!(await isDir(snapshotPaths(dir).image))) return false;
    await this.putDirectory(buildSnapshotKey(buildID, snapshotKey), dir);
    return true;
  }

  /**
   * Fetches a build this node lacks (layers, its snapshot of this node's runtime, manifest) into
   * the cache. False when the shared store has no such build. Concurrent calls share one fetch.
   */
  async fetchBuild(buildID: string): Promise<boolean> {
    if (!BUILD_ID.test(buildID) || buildID === "base") return false;
    if (this.options.templates.readBuild(buildID)) {
      this.cache.touch(cacheID("build", buildID));
      return true;
    }
    return this.cache.once(cacheID("build", buildID), () => this.doFetchBuild(buildID));
  }

  private async doFetchBuild(buildID: string): Promise<boolean> {
    const { templates, snapshotKey, logger } = this.options;
    const started = performance.now();
    const file = this.tempFile("build.json");
    let manifest: BuildManifest;
    try {
      if (!(await this.store.getFile(buildKey(buildID), file))) return false;
      manifest = parseManifest(await readFile(file, "utf8"), buildID);
    } finally {
      await rm(file, { force: true });
    }
    if (manifest.baseRootfs) manifest.baseRootfs = this.localBase(manifest.baseRootfs, `build ${buildID}`);
    let bytes = 0;
    await templates.beginBuild(buildID);
    let committed = false;
    try {
      for (const key of manifest.layers) bytes += await this.fetchLayer(key);
      let restored = false;
      if (snapshotKey) {
        const dir = snapshotDir(templates.buildDir(buildID), snapshotKey);
        const got = await this.getDirectory(buildSnapshotKey(buildID, snapshotKey), dir);
        if (got) {
          bytes += await diskUsage(dir);
          restored = true;
        }
      }
      await templates.commitBuild(manifest);
      await templates.finishBuild(buildID);
      committed = true;
      await this.cache.add(cacheID("build", buildID), bytes);
      logger.info(
        { buildID, bytes, snapshot: restored, ms: Math.round(performance.now() - started) },
        restored
          ? "template build fetched from shared storage"
          : "template build fetched from shared storage without a snapshot of this runtime: cold boots until this node made one",
      );
      return true;
    } finally {
      if (!committed) await templates.deleteBuild(buildID).catch(() => undefined);
    }
  }

  /** Removes a deleted build's shared objects; its layers stay (other builds may use them). */
  async deleteBuild(buildID: string): Promise<void> {
    if (!BUILD_ID.test(buildID) || buildID === "base") return;
    await this.cache.forget(cacheID("build", buildID));
    // The manifest first: no node starts a fetch of a half-deleted build.
    await this.store.delete(buildKey(buildID));
    for (const key of await this.store.list(`templates/builds/${buildID}/`)) await this.store.delete(key);
  }

  /** Marks a build as used (the cache's LRU order). */
  touchBuild(buildID: string): void {
    this.cache.touch(cacheID("build", buildID));
  }

  // ---- named snapshots ----

  /** Publishes a named snapshot (and the template layers it stands on that the store lacks). */
  async publishSnapshot(snapshot: SandboxSnapshot): Promise<void> {
    const { dataDir, templates, logger } = this.options;
    const layers = (snapshot.config.lowers ?? [])
      .map((lower) => templates.layerKeyOf(lower))
      .filter((k): k is string => k !== undefined);
    await this.publishLayers(layers);
    const started = performance.now();
    await this.putDirectory(snapshotKey(snapshot.snapshotID), snapshotPath(dataDir, snapshot.snapshotID));
    logger.info(
      { snapshotID: snapshot.snapshotID, ms: Math.round(performance.now() - started) },
      "snapshot published to shared storage",
    );
  }

  /** Fetches a named snapshot this node lacks; undefined when the shared store has none. */
  async fetchSnapshot(snapshotID: string): Promise<SandboxSnapshot | undefined> {
    if (!SNAPSHOT_ID.test(snapshotID)) return undefined;
    return this.cache.once(cacheID("snapshot", snapshotID), () => this.doFetchSnapshot(snapshotID));
  }

  private async doFetchSnapshot(snapshotID: string): Promise<SandboxSnapshot | undefined> {
    const { dataDir, logger } = this.options;
    const final = snapshotPath(dataDir, snapshotID);
    const temp = `${final}.partial`;
    await rm(temp, { recursive: true, force: true });
    await mkdir(snapshotsRoot(dataDir), { recursive: true, mode: 0o700 });
    const started = performance.now();
    if (!(await this.getDirectory(snapshotKey(snapshotID), temp))) return undefined;
    try {
      const snapshot = JSON.parse(await readFile(snapshotParts(temp).manifest, "utf8")) as SandboxSnapshot;
      if (snapshot.snapshotID !== snapshotID || snapshot.ephemeral || typeof snapshot.teamID !== "string") {
        throw new Error(`the shared snapshot ${snapshotID} has a manifest of another snapshot`);
      }
      // Its lowers were paths on the node that took it: this node's copies of the same layers.
      let bytes = 0;
      const lowers: string[] = [];
      for (const lower of snapshot.config.lowers ?? []) {
        const layer = LAYER_FILES.exec(lower)?.[1];
        if (layer) {
          bytes += await this.fetchLayer(layer);
          lowers.push(this.options.templates.layerFiles(layer));
        } else lowers.push(this.localBase(lower, `snapshot ${snapshotID}`));
      }
      snapshot.config.lowers = lowers;
      await writeManifestCopy(snapshotParts(temp).manifest, snapshot, 0o600);
      bytes += await diskUsage(temp);
      await rename(temp, final);
      await this.cache.add(cacheID("snapshot", snapshotID), bytes);
      logger.info(
        { snapshotID, bytes, ms: Math.round(performance.now() - started) },
        "snapshot fetched from shared storage",
      );
      return snapshot;
    } catch (err) {
      await rm(temp, { recursive: true, force: true });
      throw err;
    }
  }

  async deleteSnapshot(snapshotID: string): Promise<void> {
    if (!SNAPSHOT_ID.test(snapshotID)) return;
    await this.cache.forget(cacheID("snapshot", snapshotID));
    await this.store.delete(snapshotKey(snapshotID));
  }

  // ---- layers and the cache ----

  private async publishLayers(keys: readonly string[]): Promise<void> {
    const { templates } = this.options;
    for (const key of new Set(keys)) {
      if (!LAYER_KEY.test(key)) throw new Error(`layer key ${key} is malformed`);
      if (await this.store.has(layerKey(key))) continue;
      await this.putDirectory(layerKey(key), templates.layerDir(key));
    }
  }

  /** Fetches a layer this node lacks; the bytes it took (0 when it was there). */
  private fetchLayer(key: string): Promise<number> {
    const { templates } = this.options;
    if (!LAYER_KEY.test(key)) throw new Error(`layer key ${key} is malformed`);
    if (templates.hasLayer(key)) return Promise.resolve(0);
    return this.cache.once(`layer:${key}`, async () => {
      if (templates.hasLayer(key)) return 0;
      // Named as the builder's half-made layers are: a crash leaves it to the store's sweep.
      const temp = path.join(
        templates.layersDir(),
        `.tmp-${key}-${process.pid}-${randomBytes(3).toString("hex")}`,
      );
      try {
        if (!(await this.getDirectory(layerKey(key), temp))) {
          throw new Error(`layer ${key} is missing from shared storage: delete the build and build it again`);
        }
        const meta = JSON.parse(await readFile(path.join(temp, "layer.json"), "utf8")) as { key?: string };
        if (meta.key !== key || !(await isDir(path.join(temp, "fs")))) {
          throw new Error(`the shared layer ${key} holds another layer or no files`);
        }
        const bytes = await diskUsage(temp);
        const final = templates.layerDir(key);
        if (templates.hasLayer(key)) return 0;
        await rm(final, { recursive: true, force: true });
        await rename(temp, final);
        return bytes;
      } finally {
        await removeTree(temp).catch(() => undefined);
      }
    });
  }

  /** Packs `dir` and puts it as `key`. */
  private async putDirectory(key: string, dir: string): Promise<void> {
    const archive = this.tempFile("pack.tar.zst");
    try {
      await packDirectory(dir, archive);
      await this.store.putFile(key, archive);
    } finally {
      await rm(archive, { force: true });
    }
  }

  /** Gets `key` and unpacks it into `dir` (which must not exist); false when there is no such object. */
  private async getDirectory(key: string, dir: string): Promise<boolean> {
    const archive = this.tempFile("get.tar.zst");
    try {
      if (!(await this.store.getFile(key, archive))) return false;
      await unpackArchive(archive, dir);
      return true;
    } finally {
      await rm(archive, { force: true });
    }
  }

  private inUse(id: string): boolean {
    const [kind, name = ""] = splitCacheID(id);
    return kind === "build" && (this.hooks?.buildsInUse().has(name) ?? true);
  }

  private async removeLocal(id: string): Promise<void> {
    const [kind, name = ""] = splitCacheID(id);
    if (!this.hooks) throw new Error("the node is not started yet");
    if (kind === "build") await this.hooks.removeBuild(name);
    else if (kind === "snapshot") await this.hooks.removeSnapshot(name);
  }

  /** This node's base rootfs for one named in a build or snapshot of another node: the same base template, or an error. */
  private localBase(remote: string, what: string): string {
    const local = this.options.templates.baseRootfs;
    const want = BASE_ROOTFS.exec(remote)?.[1];
    const have = BASE_ROOTFS.exec(local)?.[1];
    if (!want || want !== have) {
      throw new Error(
        `${what} stands on base template ${want ?? remote}, this node has ${have ?? local}: run the same moat version (moat setup) on every node`,
      );
    }
    return local;
  }

  private tmpDir(): string {
    return path.join(artifactsDir(this.options.dataDir), "tmp");
  }

  private tempFile(name: string): string {
    return path.join(this.tmpDir(), `${randomBytes(6).toString("hex")}-${name}`);
  }
}

export function layerKey(key: string): string {
  return `templates/layers/${key}.tar.zst`;
}

export function buildKey(buildID: string): string {
  return `templates/builds/${buildID}/build.json`;
}

export function buildSnapshotKey(buildID: string, key: string): string {
  return `templates/builds/${buildID}/snapshots/${key}.tar.zst`;
}

export function snapshotKey(snapshotID: string): string {
  return `snapshots/${snapshotID}.tar.zst`;
}

function cacheID(kind: "build" | "snapshot", id: string): string {
  return `${kind}:${id}`;
}

function splitCacheID(id: string): [string, string] {
  const at = id.indexOf(":");
  return [id.slice(0, at), id.slice(at + 1)];
}

async function isDir(p: string): Promise<boolean> {
  return (await stat(p).catch(() => undefined))?.isDirectory() ?? false;
}

async function writeManifestCopy(file: string, value: unknown, mode = 0o644): Promise<void> {
  await writeFileAtomic(file, `${JSON.stringify(value, null, 2)}\n`, mode);
}

/** A fetched build.json, checked field by field: it comes from storage less trusted than the node's disk. */
export function parseManifest(text: string, buildID: string): BuildManifest {
  const bad = (why: string) => new Error(`the shared manifest of build ${buildID} ${why}`);
  let m: BuildManifest;
  try {
    m = JSON.parse(text) as BuildManifest;
  } catch {
    throw bad("is not JSON");
  }
  if (typeof m !== "object" || m === null) throw bad("is not an object");
  if (m.buildID !== buildID) throw bad(`names another build (${String(m.buildID)})`);
  if (typeof m.templateID !== "string" || !BUILD_ID.test(m.templateID)) throw bad("has no valid template id");
  if (!Array.isArray(m.layers) || !m.layers.every((k) => typeof k === "string" && LAYER_KEY.test(k))) {
    throw bad("has malformed layer keys");
  }
  if (m.baseRootfs !== undefined && typeof m.baseRootfs !== "string") throw bad("has a malformed base");
  if (!Number.isInteger(m.vcpu) || !Number.isInteger(m.memoryMB)) throw bad("has no size");
  if (typeof m.env !== "object" || m.env === null) throw bad("has no environment");
  for (const field of ["user", "workdir", "startCmd", "readyCmd", "teamID", "finalKey"] as const) {
    if (m[field] !== undefined && typeof m[field] !== "string") throw bad(`has a malformed ${field}`);
  }
  return m;
}
