/**
 * The volume content calls (storage/volume-files.ts) on a plain directory, as a sandbox that mounts
 * the volume would attack them: symlinks planted to a directory outside the volume, a directory
 * swapped for a symlink while requests run, `..` and NUL in paths. A canary directory beside the
 * volume must never be read, written, listed, chmod'ed or removed through it.
 */
import assert from "node:assert/strict";
import { once } from "node:events";
import { constants } from "node:fs";
import {
  type FileHandle,
  lstat,
  mkdir,
  mkdtemp,
  open,
  readdir,
  readFile,
  rm,
  stat,
  symlink,
  writeFile,
} from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, afterEach, before, beforeEach, describe, test } from "node:test";
import { Worker } from "node:worker_threads";
import { parseVolumePath, readChunks, VolumeFileError, VolumeFiles } from "../src/storage/volume-files.js";

const me = { uid: process.getuid?.() ?? 0, gid: process.getgid?.() ?? 0 };

async function* bytes(...parts: string[]): AsyncGenerator<Uint8Array> {
  for (const p of parts) yield Buffer.from(p);
}

async function readAll(handle: FileHandle): Promise<string> {
  const chunks: Uint8Array[] = [];
  for await (const c of readChunks(handle)) chunks.push(c);
  return Buffer.concat(chunks).toString();
}

const kind = (k: VolumeFileError["kind"]) => (err: unknown) =>
  err instanceof VolumeFileError && err.kind === k;

describe("volume files: the content calls stay inside the volume", () => {
  let base: string;
  let volume: string;
  let outside: string;
  let root: FileHandle;
  let files: VolumeFiles;

  before(async () => {
    base = await mkdtemp(path.join(tmpdir(), "moat-volume-files-test-"));
  });
  after(async () => {
    await rm(base, { recursive: true, force: true });
  });
  beforeEach(async () => {
    volume = await mkdtemp(path.join(base, "volume-"));
    outside = await mkdtemp(path.join(base, "outside-"));
    await writeFile(path.join(outside, "secret"), "host secret");
    await mkdir(path.join(outside, "dir"));
    await writeFile(path.join(outside, "dir", "kept"), "kept");
    root = await open(volume, constants.O_RDONLY | constants.O_DIRECTORY);
    files = new VolumeFiles(root, { defaultOwner: me });
  });
  afterEach(async () => {
    await root.close();
  });

  /** The canary is as it was: nothing written, removed or chmod'ed there. */
  async function outsideUntouched(): Promise<void> {
    assert.deepEqual((await readdir(outside)).sort(), ["dir", "secret"]);
    assert.equal(await readFile(path.join(outside, "secret"), "utf8"), "host secret");
    assert.deepEqual(await readdir(path.join(outside, "dir")), ["kept"]);
    assert.equal((await stat(path.join(outside, "secret"))).mode & 0o777, 0o644);
  }

  test("write, read, stat, list, make, change and remove, from the volume's root", async () => {
    const written = await files.write("/a.txt", {}, bytes("hello ", "volume"));
    assert.equal(written.path, "/a.txt");
    assert.equal(written.name, "a.txt");
    assert.equal(written.type, "file");
    assert.equal(written.size, 12);
    assert.equal(written.mode, 0o644);
    const { handle } = await files.openRead("a.txt");
    assert.equal(await readAll(handle), "hello volume");
    await handle.close();
    const dir = await files.makeDir("/x/y/z", { mode: 0o750 }, true);
    assert.equal(dir.type, "directory");
    assert.equal(dir.mode, 0o750);
    await assert.rejects(files.makeDir("/x", {}, false), kind("exists"));
    await assert.rejects(files.makeDir("/q/r", {}, false), kind("not-found"));
    await files.write("/x/y/file", { mode: 0o600 }, bytes("deep"));
    const listed = await files.list("/x", 3);
    assert.deepEqual(
      listed.map((e) => `${e.type} ${e.path}`),
      ["directory /x/y", "file /x/y/file", "directory /x/y/z"],
    );
    assert.deepEqual(
      (await files.list("/")).map((e) => e.name),
      ["a.txt", "x"],
    );
    const changed = await files.updateMetadata("/a.txt", { mode: 0o640 });
    assert.equal(changed.mode, 0o640);
    // A rewrite keeps the file's mode unless told.
    assert.equal((await files.write("/a.txt", {}, bytes("again"))).mode, 0o640);
    await files.remove("/x");
    await assert.rejects(files.stat("/x"), kind("not-found"));
    await assert.rejects(files.remove("/"), kind("invalid"));
    await assert.rejects(files.remove("/nope"), kind("not-found"));
    await assert.rejects(files.list("/a.txt"), kind("invalid"));
    await assert.rejects(files.openRead("/"), kind("invalid"));
    assert.deepEqual(await readdir(volume), ["a.txt"]);
  });

  test("'..', NUL, over-long names and setuid modes are refused before anything is touched", async () => {
    for (const bad of [
      "..",
      "/../secret",
      "a/../../secret",
      "./a",
      "a\0b",
      `/${"n".repeat(256)}`,
      "/x".repeat(2100),
    ]) {
      assert.throws(() => parseVolumePath(bad), kind("invalid"), JSON.stringify(bad).slice(0, 40));
      await assert.rejects(files.write(bad, {}, bytes("x")), kind("invalid"));
      await assert.rejects(files.openRead(bad), kind("invalid"));
    }
    assert.deepEqual(parseVolumePath("//a///b/"), ["a", "b"]);
    await assert.rejects(files.write("/s", { mode: 0o4755 }, bytes("x")), kind("invalid"));
    await assert.rejects(files.write("/s", { uid: -1 }, bytes("x")), kind("invalid"));
    await assert.rejects(files.write("/s", { gid: 2 ** 32 - 1 }, bytes("x")), kind("invalid"));
    await outsideUntouched();
    assert.deepEqual(await readdir(volume), []);
  });

  test("a symlink a sandbox planted is reported, never followed: not read, written through, listed into or chmod'ed", async () => {
    await symlink(outside, path.join(volume, "link"));
    await symlink(path.join(outside, "secret"), path.join(volume, "file-link"));

    const info = await files.stat("/link");
    assert.equal(info.type, "symlink");
    assert.equal(info.target, outside);
    await assert.rejects(files.openRead("/file-link"), kind("invalid"));
    await assert.rejects(files.openRead("/link/secret"), kind("invalid"));
    await assert.rejects(files.write("/link/secret", {}, bytes("pwned")), kind("invalid"));
    await assert.rejects(files.write("/link/new", {}, bytes("pwned")), kind("invalid"));
    await assert.rejects(files.list("/link"), kind("invalid"));
    await assert.rejects(files.makeDir("/link/sub", {}, true), kind("invalid"));
    await assert.rejects(files.updateMetadata("/link/secret", { mode: 0o777 }), kind("invalid"));
    await assert.rejects(files.updateMetadata("/file-link", { mode: 0o777 }), kind("invalid"));
    await assert.rejects(files.remove("/link/secret"), kind("invalid"));
    // The link's own owner may change; its target's does not.
    await files.updateMetadata("/file-link", { uid: me.uid });
    // Writing the link's name replaces the link with a file.
    await files.write("/file-link", {}, bytes("mine"));
    assert.ok((await lstat(path.join(volume, "file-link"))).isFile());
    // Listing the root shows the link, not what is behind it.
    assert.deepEqual(
      (await files.list("/", 3)).map((e) => `${e.type} ${e.path}`),
      ["file /file-link", "symlink /link"],
    );
    // Removing a tree with a link to a directory in it removes the link, not the directory.
    await mkdir(path.join(volume, "tree"));
    await symlink(outside, path.join(volume, "tree", "inner"));
    await files.remove("/tree");
    await files.remove("/link");
    await outsideUntouched();
  });

  test("a directory swapped for a symlink while requests run never sends one outside", async () => {
    const dir = path.join(volume, "d");
    const parked = path.join(volume, "parked");
    await mkdir(dir);
    const stopFlag = new Int32Array(new SharedArrayBuffer(4));
    // The attacker, on a thread of its own: d flips between a real directory and a link to the
    // canary as fast as the kernel allows, while the requests below go on.
    const flipper = new Worker(
      `const fs = require("node:fs");
      const { dir, parked, outside } = require("node:worker_threads").workerData;
      const stop = new Int32Array(require("node:worker_threads").workerData.stop);
      while (Atomics.load(stop, 0) === 0) {
        try { fs.renameSync(dir, parked); fs.symlinkSync(outside, dir); } catch {}
        try { fs.unlinkSync(dir); fs.renameSync(parked, dir); } catch {}
      }`,
      { eval: true, workerData: { dir, parked, outside, stop: stopFlag.buffer } },
    );
    try {
      const attempts: Array<Promise<unknown>> = [];
      for (let i = 0; i < 150; i++) {
        attempts.push(files.write("/d/secret", { mode: 0o777 }, bytes(`round ${i}`)).catch(() => undefined));
        attempts.push(files.write(`/d/dir/f${i}`, {}, bytes("x")).catch(() => undefined));
        attempts.push(
          files.openRead("/d/secret").then(
            async ({ handle }) => {
              const text = await readAll(handle);
              await handle.close();
              assert.notEqual(text, "host secret", "a read went through the link");
            },
            () => undefined,
          ),
        );
        attempts.push(files.updateMetadata("/d/secret", { mode: 0o777 }).catch(() => undefined));
        attempts.push(files.makeDir(`/d/dir/m${i}`, {}, true).catch(() => undefined));
        attempts.push(files.remove("/d/dir").catch(() => undefined));
        attempts.push(files.list("/d", 2).catch(() => undefined));
        if (i % 20 === 0) await Promise.all(attempts.splice(0));
      }
      await Promise.all(attempts);
    } finally {
      Atomics.store(stopFlag, 0, 1);
      await once(flipper, "exit");
    }
    await outsideUntouched();
  });

  test("a FIFO or a file swapped in does not hold or redirect a call", async () => {
    const { spawnSync } = await import("node:child_process");
    assert.equal(spawnSync("mkfifo", [path.join(volume, "fifo")]).status, 0);
    await assert.rejects(files.openRead("/fifo"), kind("invalid"));
    const changed = await files.updateMetadata("/fifo", { mode: 0o600 });
    assert.equal(changed.type, "unknown");
    await files.write("/fifo", {}, bytes("replaced"));
    assert.ok((await lstat(path.join(volume, "fifo"))).isFile());
  });
});
