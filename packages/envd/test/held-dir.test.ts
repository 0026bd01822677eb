import assert from "node:assert/strict";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, symlinkSync, writeFileSync } from "node:fs";
import { rename, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { after, describe, test } from "node:test";
import type { User } from "../src/auth/users.js";
import { holdDir } from "../src/fs/held-dir.js";
import { accessFor } from "../src/services/filesystem/access.js";

// The process's own account: its permission checks are the kernel's, which is what these tests need.
const self: User = {
  name: "self",
  uid: process.getuid?.() ?? 0,
  gid: process.getgid?.() ?? 0,
  home: os.tmpdir(),
  shell: "/bin/sh",
};
const access = accessFor(self);

describe("holdDir", () => {
  const root = mkdtempSync(path.join(os.tmpdir(), "moat-held-dir-"));
  after(() => rmSync(root, { recursive: true, force: true }));

  test("creates what is missing, names the first directory it made, and holds the last", async () => {
    const held = await holdDir(path.join(root, "a/b/c"), access, self);
    try {
      assert.equal(held.firstCreated, path.join(root, "a"));
      await writeFile(held.entry("file.txt"), "inside");
      assert.equal(readFileSync(path.join(root, "a/b/c/file.txt"), "utf8"), "inside");
      assert.ok(statSync(path.join(root, "a/b")).isDirectory());
    } finally {
      await held.close();
    }
    const again = await holdDir(path.join(root, "a/b/c"), access, self);
    assert.equal(again.firstCreated, undefined);
    await again.close();
  });

  test("without createAs a missing directory is ENOENT and nothing is made", async () => {
    await assert.rejects(holdDir(path.join(root, "missing/deeper"), access), { code: "ENOENT" });
    assert.throws(() => statSync(path.join(root, "missing")), { code: "ENOENT" });
  });

  test("a file on the way is ENOTDIR", async () => {
    writeFileSync(path.join(root, "plain"), "");
    await assert.rejects(holdDir(path.join(root, "plain/child"), access, self), { code: "ENOTDIR" });
  });

  test("existing symlinks on the way are followed, as mkdir -p does", async () => {
    mkdirSync(path.join(root, "real"));
    symlinkSync(path.join(root, "real"), path.join(root, "link"));
    const held = await holdDir(path.join(root, "link/made"), access, self);
    await held.close();
    assert.ok(statSync(path.join(root, "real/made")).isDirectory());
  });

  test("entries stay in the held directory when its path is moved away and replaced by a link", async () => {
    mkdirSync(path.join(root, "held"));
    mkdirSync(path.join(root, "elsewhere"));
    const held = await holdDir(path.join(root, "held"), access, self);
    try {
      await rename(path.join(root, "held"), path.join(root, "held-moved"));
      symlinkSync(path.join(root, "elsewhere"), path.join(root, "held"));
      await writeFile(held.entry("x.txt"), "x");
      assert.equal(readFileSync(path.join(root, "held-moved/x.txt"), "utf8"), "x");
      assert.throws(() => statSync(path.join(root, "elsewhere/x.txt")), { code: "ENOENT" });
    } finally {
      await held.close();
    }
  });

  test("entry() takes one plain name only", async () => {
    const held = await holdDir(root, access);
    try {
      for (const name of ["", ".", "..", "a/b"]) assert.throws(() => held.entry(name), { code: "EINVAL" });
    } finally {
      await held.close();
    }
  });
});
