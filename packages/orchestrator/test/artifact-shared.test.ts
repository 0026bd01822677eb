import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import { createNoopLogger } from "@moat/shared";
import { ArtifactCache } from "../src/artifacts/cache.js";
import { ArtifactChecksumError } from "../src/artifacts/checksum.js";
import { DirectoryArtifactStore } from "../src/artifacts/directory.js";
import { buildKey, layerKey, parseManifest, SharedArtifacts } from "../src/artifacts/shared.js";
import type { ArtifactStore } from "../src/artifacts/store.js";
import { snapshotDir } from "../src/snapshot/template-snapshot.js";
import { type BuildManifest, TemplateStore } from "../src/template/store.js";

const logger = createNoopLogger();
const LAYER_A = "a".repeat(32);
const LAYER_B = "b".repeat(32);

/** A store that counts downloads. */
class CountingStore implements ArtifactStore {
  readonly kind = "counting";
  gets = 0;
  constructor(private readonly inner: ArtifactStore) {}
  putFile(key: string, file: string) {
    return this.inner.putFile(key, file);
  }
  async getFile(key: string, file: string) {
    this.gets++;
    return this.inner.getFile(key, file);
  }
  has(key: string) {
    return this.inner.has(key);
  }
  delete(key: string) {
    return this.inner.delete(key);
  }
  list(prefix: string) {
    return this.inner.list(prefix);
  }
}

describe("templates through shared storage", () => {
  let root: string;
  let shared: string;
  before(async () => {
    root = await mkdtemp(path.join(tmpdir(), "moat-artifact-shared-test-"));
    shared = path.join(root, "shared");
    await mkdir(shared);
  });
  after(async () => {
    await rm(root, { recursive: true, force: true });
  });

  /** A node's data dir with the base template `base` (its hash dir) and the runtime key `key`. */
  async function node(name: string, opts: { key?: string; base?: string; cacheMB?: number } = {}) {
    const dataDir = path.join(root, name);
    const baseRootfs = path.join(dataDir, "templates", "base", opts.base ?? "0123abcd", "rootfs");
    await mkdir(baseRootfs, { recursive: true });
    const templates = new TemplateStore(dataDir, baseRootfs);
    const store = new CountingStore(new DirectoryArtifactStore(shared));
    const removed: string[] = [];
    const inUse = new Set<string>();
    const artifacts = new SharedArtifacts({
      store,
      templates,
      dataDir,
      snapshotKey: opts.key ?? "runtime-1",
      cacheBytes: (opts.cacheMB ?? 100) * 2 ** 20,
      logger,
    });
    artifacts.attach({
      buildsInUse: () => inUse,
      removeBuild: async (id) => {
        removed.push(id);
        await templates.deleteBuild(id);
      },
      removeSnapshot: async () => undefined,
    });
    await artifacts.load();
    return { dataDir, templates, store, artifacts, removed, inUse, baseRootfs };
  }

  async function makeLayer(templates: TemplateStore, key: string, files: Record<string, string>) {
    const dir = templates.layerDir(key);
    await mkdir(path.join(dir, "fs"), { recursive: true });
    for (const [name, content] of Object.entries(files)) {
      await mkdir(path.dirname(path.join(dir, "fs", name)), { recursive: true });
      await writeFile(path.join(dir, "fs", name), content);
    }
    await writeFile(path.join(dir, "layer.json"), JSON.stringify({ key }));
  }

  async function makeBuild(
    n: Awaited<ReturnType<typeof node>>,
    buildID: string,
    layers: string[],
    snapshotKeys: string[] = [],
  ): Promise<BuildManifest> {
    const manifest: BuildManifest = {
      teamID: "team-1",
      templateID: "tpl",
      buildID,
      baseRootfs: n.baseRootfs,
      layers,
      vcpu: 2,
      memoryMB: 512,
      env: { A: "1" },
      startCmd: "sleep infinity",
      createdAt: new Date().toISOString(),
    };
    await n.templates.commitBuild(manifest);
    for (const key of snapshotKeys) {
      const dir = snapshotDir(n.templates.buildDir(buildID), key);
      await mkdir(path.join(dir, "memory"), { recursive: true });
      await writeFile(path.join(dir, "memory", "pages"), `memory of ${key}`);
      await mkdir(path.join(dir, "upper", "tmp"), { recursive: true });
    }
    return manifest;
  }

  test("a build published by one node starts on another: layers, manifest and the snapshot of its runtime", async () => {
    const a = await node("a1");
    await makeLayer(a.templates, LAYER_A, { "etc/one": "layer a" });
    await makeLayer(a.templates, LAYER_B, { "etc/two": "layer b" });
    await makeBuild(a, "build-1", [LAYER_A, LAYER_B], ["runtime-1"]);
    await a.artifacts.publishBuild("build-1");

    const b = await node("b1");
    assert.equal(b.templates.readBuild("build-1"), undefined);
    // Concurrent creates of the build: one download of each object.
    const got = await Promise.all([1, 2, 3].map(() => b.artifacts.fetchBuild("build-1")));
    assert.deepEqual(got, [true, true, true]);
    assert.equal(b.store.gets, 4, "build.json, two layers, the snapshot: once each");
    const build = b.templates.resolve("tpl", "build-1");
    assert.ok(build, "the build resolves on the other node");
    assert.deepEqual(build.lowers, [
      b.templates.layerFiles(LAYER_B),
      b.templates.layerFiles(LAYER_A),
      b.baseRootfs,
    ]);
    assert.equal(await readFile(path.join(b.templates.layerFiles(LAYER_A), "etc/one"), "utf8"), "layer a");
    const snap = snapshotDir(b.templates.buildDir("build-1"), "runtime-1");
    assert.equal(await readFile(path.join(snap, "memory", "pages"), "utf8"), "memory of runtime-1");
    assert.ok(b.artifacts.cache.has("build:build-1"));
    // Nothing half-made is left.
    assert.deepEqual(
      (await readdir(b.templates.layersDir())).filter((n) => n.startsWith(".tmp-")),
      [],
    );
    assert.equal(existsSync(path.join(b.templates.buildDir("build-1"), ".building")), false);
  });

  test("a node of another runtime gets the build without a snapshot (it boots cold and makes its own)", async () => {
    const a = await node("a2");
    await makeLayer(a.templates, LAYER_A, { f: "x" });
    await makeBuild(a, "build-2", [LAYER_A], ["runtime-1"]);
    await a.artifacts.publishBuild("build-2");
    const b = await node("b2", { key: "runtime-2" });
    assert.equal(await b.artifacts.fetchBuild("build-2"), true);
    assert.ok(b.templates.readBuild("build-2"));
    assert.equal(existsSync(snapshotDir(b.templates.buildDir("build-2"), "runtime-2")), false);
    // What it makes is published beside the other runtime's.
    const dir = snapshotDir(b.templates.buildDir("build-2"), "runtime-2");
    await mkdir(path.join(dir, "memory"), { recursive: true });
    await writeFile(path.join(dir, "memory", "pages"), "runtime 2");
    assert.equal(await b.artifacts.publishTemplateSnapshot("build-2"), true);
    assert.deepEqual(await b.store.list("templates/builds/build-2/"), [
      "templates/builds/build-2/build.json",
      "templates/builds/build-2/snapshots/runtime-1.tar.zst",
      "templates/builds/build-2/snapshots/runtime-2.tar.zst",
    ]);
  });

  test("a tampered layer is refused: the create fails and the node keeps nothing of the build", async () => {
    const a = await node("a3");
    const key = "c".repeat(32);
    await makeLayer(a.templates, key, { "bin/tool": "genuine" });
    await makeBuild(a, "build-3", [key]);
    await a.artifacts.publishBuild("build-3");
    await writeFile(path.join(shared, layerKey(key)), "planted bytes");
    const b = await node("b3");
    await assert.rejects(b.artifacts.fetchBuild("build-3"), ArtifactChecksumError);
    assert.equal(b.templates.readBuild("build-3"), undefined);
    assert.equal(b.templates.hasLayer(key), false);
    assert.equal(existsSync(b.templates.buildDir("build-3")), false);
    assert.deepEqual(await readdir(path.join(b.dataDir, "artifacts", "tmp")), []);
  });

  test("a build on another base template is refused with what to do", async () => {
    const a = await node("a4");
    await makeLayer(a.templates, LAYER_A, { f: "x" });
    await makeBuild(a, "build-4", [LAYER_A]);
    await a.artifacts.publishBuild("build-4");
    const b = await node("b4", { base: "ffff0000" });
    await assert.rejects(b.artifacts.fetchBuild("build-4"), /base template 0123abcd.*same moat version/);
    assert.equal(b.templates.readBuild("build-4"), undefined);
  });

  test("an unknown build is not found; deleting a build removes its shared objects but its layers", async () => {
    const a = await node("a5");
    const key = "d".repeat(32);
    await makeLayer(a.templates, key, { f: "x" });
    await makeBuild(a, "build-5", [key], ["runtime-1"]);
    await a.artifacts.publishBuild("build-5");
    const b = await node("b5");
    assert.equal(await b.artifacts.fetchBuild("no-such-build"), false);
    await a.artifacts.deleteBuild("build-5");
    assert.deepEqual(await a.store.list("templates/builds/build-5/"), []);
    assert.equal(await a.store.has(layerKey(key)), true);
    assert.equal(await b.artifacts.fetchBuild("build-5"), false);
  });

  test("past the cache's bound the least recently used fetched build is evicted, never one in use", async () => {
    const a = await node("a6");
    const big = "x".repeat(600 * 1024);
    const keys = ["1", "2", "3"].map((d) => d.repeat(32));
    for (const [i, key] of keys.entries()) {
      await makeLayer(a.templates, key, { [`f${i}`]: `${big}${i}` });
      await makeBuild(a, `lru-${i}`, [key]);
      await a.artifacts.publishBuild(`lru-${i}`);
    }
    // Room for two builds of ~600 KiB.
    const b = await node("b6", { cacheMB: 1.5 });
    b.inUse.add("lru-0");
    for (let i = 0; i < 3; i++) assert.equal(await b.artifacts.fetchBuild(`lru-${i}`), true);
    assert.deepEqual(b.removed, ["lru-1"], "lru-0 is older but in use");
    assert.ok(b.templates.readBuild("lru-0"));
    assert.equal(b.templates.readBuild("lru-1"), undefined);
    assert.ok(b.templates.readBuild("lru-2"));
  });

  test("a fetched manifest is checked field by field", () => {
    const good = { buildID: "b", templateID: "t", layers: [LAYER_A], vcpu: 1, memoryMB: 64, env: {} };
    assert.equal(parseManifest(JSON.stringify(good), "b").buildID, "b");
    const bad: Array<[unknown, RegExp]> = [
      [{ ...good, buildID: "other" }, /names another build/],
      [{ ...good, layers: ["../../etc"] }, /malformed layer keys/],
      [{ ...good, templateID: "../x" }, /template id/],
      [{ ...good, startCmd: 5 }, /malformed startCmd/],
      ["[]", /names another build|not an object/],
    ];
    for (const [value, why] of bad) {
      assert.throws(() => parseManifest(typeof value === "string" ? value : JSON.stringify(value), "b"), why);
    }
    assert.throws(() => parseManifest("{", "b"), /not JSON/);
  });
});

describe("the artifact cache", () => {
  test("evicts least recently used first, skips entries in use, and runs one fetch per key", async () => {
    const dir = await mkdtemp(path.join(tmpdir(), "moat-artifact-cache-test-"));
    try {
      let clock = 0;
      const removed: string[] = [];
      const busy = new Set<string>();
      const cache = new ArtifactCache({
        file: path.join(dir, "cache.json"),
        limitBytes: 100,
        logger,
        inUse: (id) => busy.has(id),
        remove: async (id) => {
          removed.push(id);
        },
        now: () => ++clock,
      });
      await cache.load();
      await cache.add("a", 40);
      await cache.add("b", 40);
      cache.touch("a");
      busy.add("b");
      await cache.add("c", 40);
      assert.deepEqual(removed, ["a"], "b is older but in use");
      busy.delete("b");
      await cache.add("d", 40);
      assert.deepEqual(removed, ["a", "b"]);
      // The index survives a restart.
      const again = new ArtifactCache({
        file: path.join(dir, "cache.json"),
        limitBytes: 100,
        logger,
        inUse: () => false,
        remove: async () => undefined,
      });
      await again.load();
      assert.deepEqual(again.ids().sort(), ["c", "d"]);
      let runs = 0;
      let release!: () => void;
      const gate = new Promise<void>((r) => {
        release = r;
      });
      const fetches = [1, 2, 3].map(() =>
        cache.once("k", async () => {
          runs++;
          await gate;
          return "done";
        }),
      );
      release();
      assert.deepEqual(await Promise.all(fetches), ["done", "done", "done"]);
      assert.equal(runs, 1);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});

// Keys used above are what the store names.
test("object keys", () => {
  assert.equal(buildKey("b1"), "templates/builds/b1/build.json");
  assert.equal(layerKey(LAYER_A), `templates/layers/${LAYER_A}.tar.zst`);
});
