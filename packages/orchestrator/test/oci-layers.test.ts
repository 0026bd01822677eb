/**
 * The layer extraction logic in-process (the node runs it in a bubblewrap sandbox; tests in
 * tests/integration/hostile/oci.test.ts drive that): names resolved inside the root, hostile
 * entries refused by name, whiteouts, opaque directories and the rootfs preparation.
 */
import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import {
  chmod,
  lstat,
  mkdir,
  mkdtemp,
  readdir,
  readFile,
  readlink,
  rm,
  symlink,
  writeFile,
} from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { Readable } from "node:stream";
import { after, before, describe, test } from "node:test";
import { gzipSync } from "node:zlib";
import * as tar from "tar";
import {
  entryParts,
  LayerError,
  LayerExtractor,
  prepareRootfs,
  resolveInRoot,
} from "../src/template/oci/extract.js";
import { type RawEntry, rawTar } from "./raw-tar.js";

const owners = process.getuid?.() === 0;

describe("OCI layers applied to a rootfs", () => {
  let work: string;
  /** A host directory with a canary file nothing may touch. */
  let host: string;
  before(async () => {
    work = await mkdtemp(path.join(tmpdir(), "moat-test-layers-"));
    host = path.join(work, "host");
    await mkdir(host);
    await writeFile(path.join(host, "canary"), "canary");
  });
  after(async () => {
    await rm(work, { recursive: true, force: true });
  });

  const rootfs = () => mkdtemp(path.join(work, "rootfs-"));
  const apply = (root: string, ...layers: RawEntry[][]) =>
    layers.reduce(
      (done, entries) =>
        done.then(() => new LayerExtractor(root, { owners }).apply(Readable.from([rawTar(entries)]))),
      Promise.resolve(),
    );
  const hostUntouched = async () => {
    assert.deepEqual(await readdir(host), ["canary"], "nothing written to or deleted from the host");
    assert.equal(await readFile(path.join(host, "canary"), "utf8"), "canary");
  };

  /** A tar layer made from a directory `build` fills. */
  async function layer(name: string, build: (dir: string) => Promise<void>): Promise<Readable> {
    const dir = path.join(work, `src-${name}`);
    await mkdir(dir);
    await build(dir);
    const file = path.join(work, `${name}.tar`);
    await tar.c({ cwd: dir, file, portable: false }, ["."]);
    return Readable.from([await readFile(file)]);
  }

  test("entry names: relative, `.` and empty components dropped; absolute and `..` refused", () => {
    assert.deepEqual(entryParts("./usr//bin/"), ["usr", "bin"]);
    assert.deepEqual(entryParts("./"), []);
    assert.throws(() => entryParts("/etc/passwd"), /entry '\/etc\/passwd' is an absolute path/);
    assert.throws(() => entryParts(".."), /entry '\.\.' has a '\.\.' component/);
    assert.throws(() => entryParts("a/../../b"), /has a '\.\.' component/);
    assert.throws(
      () => entryParts("a/\u001b[2J/.."),
      (err: Error) => !err.message.includes("\u001b"),
    );
  });

  test("symlinks, absolute ones too, resolve inside the rootfs, never to the host", async () => {
    const root = await rootfs();
    const lower = await layer("links", async (dir) => {
      await symlink(host, path.join(dir, "escape"));
      await mkdir(path.join(dir, "usr", "lib"), { recursive: true });
      await symlink("usr/lib", path.join(dir, "lib"));
      await symlink("../../..", path.join(dir, "usr", "lib", "up"));
    });
    const upper = await layer("through", async (dir) => {
      await mkdir(path.join(dir, "escape"));
      await writeFile(path.join(dir, "escape", "pwned"), "x");
      await mkdir(path.join(dir, "tmp"));
      await chmod(path.join(dir, "tmp"), 0o1777);
      await writeFile(path.join(dir, "setgid"), "");
      await chmod(path.join(dir, "setgid"), 0o2755);
    });
    await new LayerExtractor(root, { owners }).apply(lower);
    await new LayerExtractor(root, { owners }).apply(upper);
    await hostUntouched();
    assert.equal(await readFile(path.join(root, "escape", "pwned"), "utf8"), "x");
    assert.equal(await readlink(path.join(root, "lib")), "usr/lib");
    assert.equal(resolveInRoot(root, "lib/up/../etc"), path.join(root, "etc"), "`..` stops at the root");
    assert.equal(resolveInRoot(root, "escape/x"), path.join(root, "escape", "x"));
    assert.equal((await lstat(path.join(root, "tmp"))).mode & 0o7777, 0o1777, "sticky bit kept");
    assert.equal((await lstat(path.join(root, "setgid"))).mode & 0o7777, 0o2755, "setgid kept");
  });

  test("a symlink named `..`, then entries through it: refused by name, nothing written", async () => {
    const root = await rootfs();
    await assert.rejects(
      apply(root, [
        { path: "..", type: "SymbolicLink", linkpath: host },
        { path: "../pwned", data: "x" },
      ]),
      (err: Error) => err instanceof LayerError && /entry '\.\.' has a '\.\.' component/.test(err.message),
    );
    await assert.rejects(
      apply(root, [{ path: "a/../../pwned", data: "x" }]),
      /'a\/\.\.\/\.\.\/pwned' has a '\.\.'/,
    );
    await assert.rejects(apply(root, [{ path: `${host}/pwned`, data: "x" }]), /is an absolute path/);
    await hostUntouched();
  });

  test("entries through links that point out (chains, `/`, `..`) land inside the root", async () => {
    const root = await rootfs();
    await apply(root, [
      { path: "up", type: "SymbolicLink", linkpath: "../../../../../.." },
      { path: "abs", type: "SymbolicLink", linkpath: host },
      { path: "a", type: "SymbolicLink", linkpath: "b" },
      { path: "b", type: "SymbolicLink", linkpath: "/" },
      { path: `up${host}/pwned1`, data: "1" },
      { path: "abs/pwned2", data: "2" },
      { path: `a${host}/pwned3`, data: "3" },
      { path: `a${host}/canary`, data: "overwritten?" },
    ]);
    await hostUntouched();
    const inside = path.join(root, host);
    assert.deepEqual((await readdir(inside)).sort(), ["canary", "pwned1", "pwned2", "pwned3"]);
  });

  test("a file over a symlink to the host replaces the link; the host file stays", async () => {
    const root = await rootfs();
    await apply(
      root,
      [{ path: "f", type: "SymbolicLink", linkpath: path.join(host, "canary") }],
      [{ path: "f", data: "image file" }],
    );
    await hostUntouched();
    assert.equal(await readFile(path.join(root, "f"), "utf8"), "image file");
    assert.ok((await lstat(path.join(root, "f"))).isFile());
  });

  test("whiteouts: `.wh...` refused; through a link to the host they delete inside the root", async () => {
    const root = await rootfs();
    await assert.rejects(apply(root, [{ path: ".wh...", data: "" }]), /whiteout '\.wh\.\.\.' names no file/);
    await assert.rejects(apply(root, [{ path: "x/.wh...", data: "" }]), /whiteout 'x\/\.wh\.\.\.'/);
    await mkdir(path.join(root, host), { recursive: true });
    await writeFile(path.join(root, host, "canary"), "inside");
    await apply(root, [
      { path: "h", type: "SymbolicLink", linkpath: host },
      { path: "h/.wh.canary", data: "" },
    ]);
    await hostUntouched();
    assert.ok(!existsSync(path.join(root, host, "canary")), "the rootfs' own file is the one whited out");
  });

  test("hard links: to absolute or `..` targets refused; through links resolved inside the root", async () => {
    const root = await rootfs();
    await assert.rejects(
      apply(root, [{ path: "passwd", type: "Link", linkpath: "/etc/passwd" }]),
      /hard link 'passwd' to '\/etc\/passwd' is an absolute path/,
    );
    await assert.rejects(
      apply(root, [{ path: "p", type: "Link", linkpath: "../../../../etc/passwd" }]),
      /hard link 'p' to '\.\.\/\.\.\/\.\.\/\.\.\/etc\/passwd' has a '\.\.' component/,
    );
    await assert.rejects(
      apply(root, [
        { path: "h", type: "SymbolicLink", linkpath: host },
        { path: "stolen", type: "Link", linkpath: "h/canary" },
      ]),
      /hard link 'stolen' to 'h\/canary': no such file in the image/,
    );
    await apply(root, [
      { path: "real", data: "shared" },
      { path: "alias", type: "Link", linkpath: "./real" },
    ]);
    assert.equal((await lstat(path.join(root, "alias"))).ino, (await lstat(path.join(root, "real"))).ino);
    await hostUntouched();
  });

  test("an opaque directory keeps this layer's entries, before and after the marker", async () => {
    const root = await rootfs();
    await apply(
      root,
      [
        { path: "d/old", data: "o" },
        { path: "d/sub/old", data: "o" },
        { path: "d/sub/keep-dir-old", data: "o" },
      ],
      [
        { path: "d/before", data: "b" },
        { path: "d/sub/new", data: "n" },
        { path: "d/.wh..wh..opq", data: "" },
        { path: "d/after", data: "a" },
      ],
    );
    assert.deepEqual((await readdir(path.join(root, "d"))).sort(), ["after", "before", "sub"]);
    assert.deepEqual(
      await readdir(path.join(root, "d", "sub")),
      ["new"],
      "lower entries below kept dirs go too",
    );
  });

  test("a tar compressed twice, a truncated tar and a file where a directory is needed fail cleanly", async () => {
    const root = await rootfs();
    await assert.rejects(
      new LayerExtractor(root, { owners }).apply(
        Readable.from([gzipSync(rawTar([{ path: "f", data: "x" }]))]),
      ),
      /compressed twice/,
    );
    const whole = rawTar([{ path: "big", data: "y".repeat(5000) }]);
    await assert.rejects(
      new LayerExtractor(root, { owners }).apply(Readable.from([whole.subarray(0, 1536)])),
      /TAR_BAD_ARCHIVE|truncated/i,
    );
    await assert.rejects(
      apply(root, [
        { path: "file", data: "x" },
        { path: "file/child", data: "y" },
      ]),
      /'file\/child': 'file' is not a directory/,
    );
  });

  test("rootfs preparation: tini and /tmp inside the root, never through the image's links", async () => {
    const root = await rootfs();
    const tini = path.join(work, "tini-static");
    await writeFile(tini, "#!tini");
    await apply(root, [{ path: "usr", type: "SymbolicLink", linkpath: host }]);
    prepareRootfs(root, tini);
    await hostUntouched();
    assert.equal(await readFile(path.join(root, host, "bin", "tini"), "utf8"), "#!tini");
    const linkedTmp = await rootfs();
    await apply(linkedTmp, [{ path: "tmp", type: "SymbolicLink", linkpath: host }]);
    prepareRootfs(linkedTmp, tini);
    await hostUntouched();
    assert.ok((await lstat(path.join(linkedTmp, "tmp"))).isDirectory());
    assert.equal((await lstat(path.join(linkedTmp, "tmp"))).mode & 0o7777, 0o1777);
    // An image's own tini stays.
    const other = await rootfs();
    await apply(other, [{ path: "usr/bin/tini", data: "own", mode: 0o755 }]);
    prepareRootfs(other, tini);
    assert.equal(await readFile(path.join(other, "usr/bin/tini"), "utf8"), "own");
  });
});
