import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { chmod, lstat, mkdir, mkdtemp, readFile, readlink, rm, symlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import * as tar from "tar";
import { applyLayers, resolveInRoot } from "../src/template/oci/layers.js";

describe("OCI layers applied to a rootfs", () => {
  let work: string;
  before(async () => {
    work = await mkdtemp(path.join(tmpdir(), "moat-test-layers-"));
  });
  after(async () => {
    await rm(work, { recursive: true, force: true });
  });

  /** A tar layer made from a directory `build` fills. */
  async function layer(name: string, build: (dir: string) => Promise<void>): Promise<string> {
    const dir = path.join(work, `src-${name}`);
    await mkdir(dir);
    await build(dir);
    const file = path.join(work, `${name}.tar`);
    await tar.c({ cwd: dir, file, portable: false }, ["."]);
    return file;
  }

  test("symlinks, absolute ones too, resolve inside the rootfs, never to the host", async () => {
    const host = await mkdtemp(path.join(tmpdir(), "moat-test-host-"));
    const rootfs = await mkdtemp(path.join(work, "rootfs-"));
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
    await applyLayers([{ path: lower }, { path: upper }], rootfs);
    assert.ok(!existsSync(path.join(host, "pwned")), "nothing written through a link to the host");
    assert.equal(await readFile(path.join(rootfs, "escape", "pwned"), "utf8"), "x");
    assert.equal(await readlink(path.join(rootfs, "lib")), "usr/lib");
    assert.equal(resolveInRoot(rootfs, "lib/up/../etc"), path.join(rootfs, "etc"), "`..` stops at the root");
    assert.equal(resolveInRoot(rootfs, "escape/x"), path.join(rootfs, "escape", "x"));
    assert.equal((await lstat(path.join(rootfs, "tmp"))).mode & 0o7777, 0o1777, "sticky bit kept");
    assert.equal((await lstat(path.join(rootfs, "setgid"))).mode & 0o7777, 0o2755, "setgid kept");
    await rm(host, { recursive: true, force: true });
  });
});
