import assert from "node:assert/strict";
import {
  link,
  lstat,
  mkdir,
  mkdtemp,
  readFile,
  readlink,
  rm,
  stat,
  symlink,
  writeFile,
} from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import { runCommand } from "@moat/shared";
import { ArchiveError, packDirectory, parseListing, unpackArchive } from "../src/artifacts/pack.js";
import { type RawEntry, rawTar } from "./raw-tar.js";

const root = process.getuid?.() === 0;

describe("packing directories for shared storage", () => {
  let work: string;
  before(async () => {
    work = await mkdtemp(path.join(tmpdir(), "moat-artifact-pack-test-"));
  });
  after(async () => {
    await rm(work, { recursive: true, force: true });
  });

  /** A zstd tar of hand-made entries (what GNU tar would refuse to make). */
  async function hostile(name: string, entries: RawEntry[]): Promise<string> {
    const plain = path.join(work, `${name}.tar`);
    await writeFile(plain, rawTar(entries));
    await runCommand(["zstd", "-q", "-f", "--rm", plain, "-o", `${plain}.zst`]);
    return `${plain}.zst`;
  }

  test("a round trip keeps modes, symlinks, hard links, sparse files, FIFOs (and owners, whiteouts, xattrs as root)", async () => {
    const src = path.join(work, "src");
    await mkdir(path.join(src, "dir/sub"), { recursive: true });
    await writeFile(path.join(src, "dir/script"), "#!/bin/sh\necho hi\n", { mode: 0o4755 });
    await writeFile(path.join(src, 'name with "quotes" -> and\nnewline'), "odd");
    await symlink("/etc/passwd", path.join(src, "dir/abs-link"));
    await symlink("../script", path.join(src, "dir/sub/rel-link"));
    await link(path.join(src, "dir/script"), path.join(src, "hard"));
    await writeFile(path.join(src, "sparse"), "");
    await runCommand(["truncate", "-s", "512M", path.join(src, "sparse")]);
    await writeFile(path.join(src, "sparse"), "end", { flag: "a" });
    await runCommand(["mkfifo", path.join(src, "fifo")]);
    if (root) {
      await runCommand(["chown", "-h", "1234:5678", path.join(src, "dir/abs-link")]);
      await runCommand(["chown", "4321:8765", path.join(src, "dir/sub")]);
      await runCommand(["mknod", path.join(src, "whiteout"), "c", "0", "0"]);
      await runCommand([
        "python3",
        "-c",
        `import os; os.setxattr(${JSON.stringify(path.join(src, "dir"))}, "trusted.overlay.opaque", b"y")`,
      ]);
    }
    const archive = path.join(work, "layer.tar.zst");
    await packDirectory(src, archive);
    assert.ok((await stat(archive)).size < 64 * 1024, "the hole is not in the archive");
    const out = path.join(work, "out");
    await unpackArchive(archive, out);

    assert.equal((await stat(path.join(out, "dir/script"))).mode & 0o7777, 0o4755);
    assert.equal(await readFile(path.join(out, 'name with "quotes" -> and\nnewline'), "utf8"), "odd");
    assert.equal(await readlink(path.join(out, "dir/abs-link")), "/etc/passwd");
    assert.equal(await readlink(path.join(out, "dir/sub/rel-link")), "../script");
    assert.equal((await stat(path.join(out, "hard"))).ino, (await stat(path.join(out, "dir/script"))).ino);
    const sparse = await stat(path.join(out, "sparse"));
    assert.equal(sparse.size, 512 * 2 ** 20 + 3);
    assert.ok(sparse.blocks * 512 < 2 ** 20, `sparse stays sparse (${sparse.blocks} blocks)`);
    assert.ok((await lstat(path.join(out, "fifo"))).isFIFO());
    if (root) {
      const l = await lstat(path.join(out, "dir/abs-link"));
      assert.deepEqual([l.uid, l.gid], [1234, 5678]);
      const d = await stat(path.join(out, "dir/sub"));
      assert.deepEqual([d.uid, d.gid], [4321, 8765]);
      const w = await lstat(path.join(out, "whiteout"));
      assert.ok(w.isCharacterDevice() && w.rdev === 0);
      const { stdout } = await runCommand([
        "python3",
        "-c",
        `import os; print(os.getxattr(${JSON.stringify(path.join(out, "dir"))}, "trusted.overlay.opaque"))`,
      ]);
      assert.equal(stdout.trim(), "b'y'");
    }
  });

  test("an unpack into an existing directory is refused", async () => {
    const src = path.join(work, "small");
    await mkdir(src);
    await writeFile(path.join(src, "f"), "x");
    const archive = path.join(work, "small.tar.zst");
    await packDirectory(src, archive);
    await mkdir(path.join(work, "exists"));
    await assert.rejects(unpackArchive(archive, path.join(work, "exists")), /EEXIST/);
  });

  const cases: Array<[string, RawEntry[], RegExp]> = [
    ["dotdot", [{ path: "../escaped", data: "x" }], /leads out of the archive/],
    ["dotdot-inner", [{ path: "a/../../escaped", data: "x" }], /leads out of the archive/],
    ["absolute", [{ path: "/etc/cron.d/evil", data: "x" }], /absolute path/],
    [
      "through-symlink",
      [
        { path: "etc", type: "SymbolicLink", linkpath: "/etc" },
        { path: "etc/cron.d/evil", data: "x" },
      ],
      /under a symbolic link/,
    ],
    [
      "hardlink-out",
      [{ path: "h", type: "Link", linkpath: "../../etc/shadow" }],
      /leads out|outside the archive/,
    ],
    [
      "hardlink-abs",
      [{ path: "h", type: "Link", linkpath: "/etc/shadow" }],
      /absolute path|outside the archive/,
    ],
    ["block-device", [{ path: "sda", type: "BlockDevice", devmaj: 8, devmin: 0 }], /kind layers never hold/],
    ["char-device", [{ path: "mem", type: "CharacterDevice", devmaj: 1, devmin: 1 }], /is a device \(1,1\)/],
  ];
  for (const [name, entries, why] of cases) {
    test(`a hostile archive is refused whole and nothing is extracted: ${name}`, async () => {
      const archive = await hostile(name, entries);
      const target = path.join(work, `out-${name}`);
      await assert.rejects(unpackArchive(archive, target), (err: Error) => {
        assert.ok(err instanceof ArchiveError, String(err));
        assert.match(err.message, why);
        return true;
      });
      await assert.rejects(stat(target), /ENOENT/);
      await assert.rejects(stat(path.join(work, "escaped")), /ENOENT/);
    });
  }

  test("tar's quoted listing lines parse, odd names included", () => {
    assert.deepEqual(parseListing('lrwxrwxrwx 1234/5678 0 2026-12-07 00:23 "./d/a b" -> "/etc/passwd"'), {
      type: "l",
      path: "./d/a b",
      target: "/etc/passwd",
    });
    assert.deepEqual(parseListing('hrw-r--r-- 0/0 0 2026-12-07 00:23 "./x -> y" link to "./h\\"q\\n"'), {
      type: "h",
      path: "./x -> y",
      target: './h"q\n',
    });
    assert.deepEqual(parseListing('crw-r--r-- 0/0 0,0 2026-12-07 00:23 "./wh"'), {
      type: "c",
      path: "./wh",
      device: "0,0",
    });
    assert.equal(parseListing("garbage"), undefined);
  });
});
