/**
 * Templates on this node's disk. The base template is one rootfs (setup/base-template.ts); a
 * built template is a stack of layers over a base, each layer the writable layer of the build
 * sandbox that ran one step, shared between builds by the hash of everything that produced it:
 *
 *   <dataDir>/templates/layers/<key>/fs          a layer's files (overlay upper-dir format)
 *   <dataDir>/templates/builds/<buildID>/build.json   which layers, start command, defaults
 *   <dataDir>/templates/builds/<buildID>/snapshots/   its snapshots (snapshot/template-snapshot.ts)
 */
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { mkdir, readdir, readFile, rename, rm, writeFile } from "node:fs/promises";
import path from "node:path";
import { removeTree } from "../host/files.js";
import { processAlive } from "../host/process.js";

/** What a build's sandboxes start with, besides its files. */
export interface TemplateSettings {
  vcpu: number;
  memoryMB: number;
  /** Disk size of its sandboxes in MiB (unset: the node's default). */
  diskSizeMB?: number;
  /** ENV steps (and the image's own environment), the last USER and WORKDIR. */
  env: Record<string, string>;
  user?: string;
  workdir?: string;
  /** Started (as `user`, in `workdir`) before the snapshot is taken; running in every sandbox. */
  startCmd?: string;
  /** Run every 2 s until it exits 0 before the snapshot is taken. */
  readyCmd?: string;
}

/** A template build as sandboxes start from it. */
export interface TemplateBuild extends TemplateSettings {
  /** "base" or the build id: names the build's snapshot and warm pool. */
  key: string;
  templateID: string;
  /** Read-only layers of its root filesystem, top first (overlay lowerdir order). */
  lowers: string[];
  /** The directory its snapshots live under. */
  dir: string;
}

/** `build.json`: a build's layers by key (bottom first) and its settings. */
export interface BuildManifest extends TemplateSettings {
  /** The team it was built for (its layers' keys and `finalKey` carry it). */
  teamID?: string;
  templateID: string;
  buildID: string;
  /** The base template's rootfs when the stack starts on it, else undefined. */
  baseRootfs?: string;
  /** Layer keys, bottom first. */
  layers: string[];
  /** Hash of everything above but the ids: builds with the same one start the same sandboxes. */
  finalKey?: string;
  createdAt: string;
}

export interface TemplateResolver {
  /** The build sandboxes of `templateID` start from (`buildID` empty: the base template). */
  resolve(templateID: string, buildID?: string): TemplateBuild | undefined;
}

export const BASE_BUILD_KEY = "base";
/** In a build's directory while it is being built (holds the builder's pid). */
const BUILDING_MARK = ".building";
const BUILD_ID = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;

export class TemplateStore implements TemplateResolver {
  private readonly cache = new Map<string, TemplateBuild>();
  /** Built-in templates (template id → the build creates naming only the template get). */
  private readonly builtins = new Map<string, string>();

  /** `baseRootfs`: the built base template's rootfs (ensureBaseTemplate). */
  constructor(
    readonly dataDir: string,
    readonly baseRootfs: string,
  ) {}

  get base(): TemplateBuild {
    return {
      key: BASE_BUILD_KEY,
      templateID: "base",
      lowers: [this.baseRootfs],
      // Snapshots beside the rootfs: a rebuilt base template gets new ones.
      dir: path.dirname(this.baseRootfs),
      vcpu: 2,
      memoryMB: 512,
      env: {},
    };
  }

  /** Makes creates that name `templateID` and no build get `buildID` (template/code-interpreter.ts). */
  registerBuiltin(templateID: string, buildID: string): void {
    this.builtins.set(templateID, buildID);
  }

  /** The build a built-in template's creates get, when it is built on this node. */
  builtinBuildID(templateID: string): string | undefined {
    return this.builtins.get(templateID);
  }

  resolve(templateID: string, buildID?: string): TemplateBuild | undefined {
    const builtin = !buildID ? this.builtins.get(templateID) : undefined;
    if (builtin) return this.readBuild(builtin);
    if (!buildID || buildID === BASE_BUILD_KEY) return templateID === "base" ? this.base : undefined;
    const build = this.readBuild(buildID);
    return build && build.templateID === templateID ? build : undefined;
  }

  /** A finished build by id, whatever its template. */
  readBuild(buildID: string): TemplateBuild | undefined {
    if (buildID === BASE_BUILD_KEY) return this.base;
    if (!BUILD_ID.test(buildID)) return undefined;
    const cached = this.cache.get(buildID);
    if (cached) return cached;
    const manifest = this.readManifest(buildID);
    if (!manifest) return undefined;
    const build = this.toBuild(manifest);
    if (!build.lowers.every((dir) => existsSync(dir))) return undefined;
    this.cache.set(buildID, build);
    return build;
  }

  readManifest(buildID: string): BuildManifest | undefined {
    if (!BUILD_ID.test(buildID)) return undefined;
    try {
      return JSON.parse(
        readFileSync(path.join(this.buildDir(buildID), "build.json"), "utf8"),
      ) as BuildManifest;
    } catch {
      return undefined;
    }
  }

  toBuild(manifest: BuildManifest): TemplateBuild {
    const {
      buildID,
      baseRootfs,
      layers,
      teamID: _team,
      finalKey: _final,
      createdAt: _created,
      ...settings
    } = manifest;
    const lowers = [...layers].reverse().map((key) => this.layerFiles(key));
    if (baseRootfs) lowers.push(baseRootfs);
    return { ...settings, key: buildID, lowers, dir: this.buildDir(buildID) };
  }

  /** The manifests of every finished build on this node. */
  manifests(): BuildManifest[] {
    let names: string[];
    try {
      names = readdirSync(path.join(this.dataDir, "templates", "builds"));
    } catch {
      return [];
    }
    return names.map((id) => this.readManifest(id)).filter((m): m is BuildManifest => m !== undefined);
  }

  /** Another finished build of the team with the same final key (its snapshot can serve this one). */
  findFinished(finalKey: string, except: string, teamID: string): TemplateBuild | undefined {
    const twin = this.manifests().find(
      (m) => m.finalKey === finalKey && m.buildID !== except && m.teamID === teamID,
    );
    return twin && this.readBuild(twin.buildID);
  }

  /** Writes a build's manifest; the build exists for creates from then on. */
  async commitBuild(manifest: BuildManifest): Promise<void> {
    const dir = this.buildDir(manifest.buildID);
    await mkdir(dir, { recursive: true });
    const file = path.join(dir, "build.json");
    await writeFile(`${file}.tmp`, `${JSON.stringify(manifest, null, 2)}\n`);
    await rename(`${file}.tmp`, file);
    this.cache.delete(manifest.buildID);
  }

  /**
   * Marks a build as under way in this process until `finishBuild`: a build a crash interrupted
   * (its manifest may be written, its snapshot half-made) keeps the mark, and `sweep` removes it.
   */
  async beginBuild(buildID: string): Promise<void> {
    const dir = this.buildDir(buildID);
    await mkdir(dir, { recursive: true });
    await writeFile(path.join(dir, BUILDING_MARK), String(process.pid));
  }

  async finishBuild(buildID: string): Promise<void> {
    await rm(path.join(this.buildDir(buildID), BUILDING_MARK), { force: true });
  }

  /** Removes a build's manifest and snapshots; its layers stay for other builds' caches. */
  async deleteBuild(buildID: string): Promise<boolean> {
    if (!BUILD_ID.test(buildID) || buildID === BASE_BUILD_KEY) return false;
    this.cache.delete(buildID);
    const dir = this.buildDir(buildID);
    if (!existsSync(dir)) return false;
    await removeTree(dir);
    return true;
  }

  /** Removes a build directory that never got a manifest (a failed or interrupted build). */
  async discardBuild(buildID: string): Promise<void> {
    if (!BUILD_ID.test(buildID) || this.readManifest(buildID)) return;
    await rm(this.buildDir(buildID), { recursive: true, force: true });
  }

  /**
   * Removes those of `candidates` (a deleted build's layers) that no build uses any more and
   * `inUse` does not name (what sandboxes, running or paused, are mounted on, and what builds
   * under way stack on). Layers of failed builds are not candidates: they stay as build cache.
   */
  async pruneLayers(
    candidates: readonly string[],
    inUse: ReadonlySet<string>,
  ): Promise<{ removed: string[]; held: string[] }> {
    const built = new Set(this.manifests().flatMap((m) => m.layers));
    const removed: string[] = [];
    const held: string[] = [];
    for (const key of new Set(candidates)) {
      if (built.has(key) || !/^[0-9a-f]{32}$/.test(key) || !existsSync(this.layerDir(key))) continue;
      if (inUse.has(key)) {
        held.push(key);
        continue;
      }
      await removeTree(this.layerDir(key));
      removed.push(key);
    }
    return { removed, held };
  }

  /** Layers of deleted builds kept while sandboxes were still on them (`.orphans.json`). */
  readOrphans(): string[] {
    try {
      return JSON.parse(readFileSync(path.join(this.layersDir(), ".orphans.json"), "utf8")) as string[];
    } catch {
      return [];
    }
  }

  async writeOrphans(keys: string[]): Promise<void> {
    await mkdir(this.layersDir(), { recursive: true });
    const file = path.join(this.layersDir(), ".orphans.json");
    await writeFile(`${file}.tmp`, JSON.stringify(keys));
    await rename(`${file}.tmp`, file);
  }

  /** The layer key of a lower dir of this store (undefined for the base template's rootfs). */
  layerKeyOf(lower: string): string | undefined {
    const rel = path.relative(this.layersDir(), lower);
    const [key, fs, ...rest] = rel.split(path.sep);
    return key && fs === "fs" && rest.length === 0 && !key.startsWith("..") ? key : undefined;
  }

  /**
   * Removes what builds interrupted by a crash left: half-made layers (their temp dirs name the
   * pid that made them), builds still marked as under way (with their snapshots) and downloaded
   * COPY archives.
   */
  async sweep(): Promise<void> {
    const gone = async (pid: number) => pid > 0 && (pid === process.pid || !(await processAlive(pid)));
    const layers = this.layersDir();
    for (const name of await readdir(layers).catch(() => [] as string[])) {
      const pid = Number(/^\.tmp-[0-9a-f]+-(\d+)-/.exec(name)?.[1]);
      if (await gone(pid)) await removeTree(path.join(layers, name));
    }
    const builds = path.join(this.dataDir, "templates", "builds");
    for (const buildID of await readdir(builds).catch(() => [] as string[])) {
      const mark = await readFile(path.join(builds, buildID, BUILDING_MARK), "utf8").catch(() => "");
      if (mark && (await gone(Number(mark)))) {
        this.cache.delete(buildID);
        await removeTree(path.join(builds, buildID));
      }
    }
    await rm(path.join(this.dataDir, "templates", "downloads"), { recursive: true, force: true });
  }

  buildDir(buildID: string): string {
    return path.join(this.dataDir, "templates", "builds", buildID);
  }

  layersDir(): string {
    return path.join(this.dataDir, "templates", "layers");
  }

  layerDir(key: string): string {
    return path.join(this.layersDir(), key);
  }

  /** A layer's files, as an overlay lower dir. */
  layerFiles(key: string): string {
    return path.join(this.layerDir(key), "fs");
  }

  hasLayer(key: string): boolean {
    return existsSync(path.join(this.layerDir(key), "layer.json"));
  }
}
