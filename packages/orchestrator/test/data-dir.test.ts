import assert from "node:assert/strict";
import { chmod, mkdir, mkdtemp, rm, stat, symlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import { makeNodeDataPrivate } from "../src/storage/data-dir.js";

const mode = async (file: string) => ((await stat(file)).mode & 0o7777).toString(8).padStart(4, "0");

describe("the node's data directory is root's alone", () => {
  let root: string;
  let dataDir: string;
  let shared: string;

  before(async () => {
    root = await mkdtemp(path.join(tmpdir(), "moat-data-dir-test-"));
    dataDir = path.join(root, "data");
    shared = path.join(root, "shared-base");
    // As an earlier version left it: everything readable by everyone.
    const dirs = [
      "sandboxes/s1/memory",
      "sandboxes/s1/rootfs",
      "sandboxes/s1/upper/home",
      "templates/layers/k1/fs/bin",
      "templates/builds/b1/snapshots/key/memory",
      "templates/builds/b1/snapshots/key/upper/etc",
      "templates/downloads",
      "cache/oci/blobs",
      "volumes/team-1/v1/fs/shared",
    ];
    for (const dir of dirs) await mkdir(path.join(dataDir, dir), { recursive: true, mode: 0o755 });
    const files = [
      ".env",
      "sandboxes/s1/sandbox.json",
      "sandboxes/s1/runsc.log",
      "sandboxes/s1/memory/checkpoint.img",
      "sandboxes/s1/upper/home/notes.txt",
      "templates/layers/k1/layer.json",
      "templates/layers/k1/fs/bin/tool",
      "templates/builds/b1/build.json",
      "templates/builds/b1/snapshots/key/memory/checkpoint.img",
      "templates/downloads/files.tar",
      "cache/oci/blobs/sha256-abc",
      "volumes/team-1/v1/volume.img",
      "volumes/team-1/v1/fs/shared/notes.txt",
    ];
    for (const file of files) await writeFile(path.join(dataDir, file), "x", { mode: 0o644 });
    await chmod(path.join(dataDir, "templates/layers/k1/fs/bin/tool"), 0o4755);
    // A base template shared with other data directories through a symlink (as the tests do).
    await mkdir(path.join(shared, "h1/rootfs"), { recursive: true, mode: 0o755 });
    await writeFile(path.join(shared, "h1/template.json"), "{}", { mode: 0o644 });
    await symlink(shared, path.join(dataDir, "templates/base"));
    await makeNodeDataPrivate(dataDir);
  });

  after(async () => {
    await rm(root, { recursive: true, force: true });
  });

  test("the directory, records, memory images, layers' metadata, uploads and blobs are private", async () => {
    for (const dir of [
      "",
      "sandboxes",
      "sandboxes/s1",
      "sandboxes/s1/memory",
      "templates",
      "templates/layers/k1",
      "templates/builds/b1",
      "templates/builds/b1/snapshots/key",
      "templates/builds/b1/snapshots/key/memory",
      "templates/downloads",
      "cache",
      "cache/oci/blobs",
      "volumes",
      "volumes/team-1",
      "volumes/team-1/v1",
    ]) {
      assert.equal(await mode(path.join(dataDir, dir)), "0700", dir || "the data directory");
    }
    for (const file of [
      ".env",
      "sandboxes/s1/sandbox.json",
      "sandboxes/s1/runsc.log",
      "sandboxes/s1/memory/checkpoint.img",
      "templates/layers/k1/layer.json",
      "templates/builds/b1/build.json",
      "templates/builds/b1/snapshots/key/memory/checkpoint.img",
      "templates/downloads/files.tar",
      "cache/oci/blobs/sha256-abc",
      "volumes/team-1/v1/volume.img",
    ]) {
      assert.equal(await mode(path.join(dataDir, file)), "0600", file);
    }
  });

  test("root filesystems keep their modes: a sandbox sees them", async () => {
    for (const [file, expected] of [
      ["sandboxes/s1/rootfs", "0755"],
      ["sandboxes/s1/upper", "0755"],
      ["sandboxes/s1/upper/home/notes.txt", "0644"],
      ["templates/layers/k1/fs", "0755"],
      ["templates/layers/k1/fs/bin/tool", "4755"],
      ["templates/builds/b1/snapshots/key/upper/etc", "0755"],
      ["volumes/team-1/v1/fs", "0755"],
      ["volumes/team-1/v1/fs/shared/notes.txt", "0644"],
    ] as const) {
      assert.equal(await mode(path.join(dataDir, file)), expected, file);
    }
  });

  test("a shared cache behind a symlink is not changed", async () => {
    assert.equal(await mode(path.join(shared, "h1")), "0755");
    assert.equal(await mode(path.join(shared, "h1/template.json")), "0644");
  });
});
