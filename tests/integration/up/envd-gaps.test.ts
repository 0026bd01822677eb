/**
 * What the SDK's own suite found missing in real gVisor sandboxes, with the unmodified e2b SDK
 * against `moat up`: file metadata (gVisor's gofer mounts refuse user xattrs, so envd keeps it),
 * across rename, pause/resume and pool sandboxes; `files.write` over a file in place, with E2B's
 * watcher events; and `Template().setWorkdir()` on a directory no step creates.
 */
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { type FilesystemEvent, Sandbox, Template } from "e2b";
import { type RunningMoat, startMoat, useMoat } from "../helpers/moat-up.js";

const HOME = "/home/user";

/** The events a watcher got, as `type name`, once they stopped coming for a while. */
async function quietEvents(events: FilesystemEvent[], quietMs = 300): Promise<string[]> {
  let seen = -1;
  while (seen !== events.length) {
    seen = events.length;
    await new Promise((r) => setTimeout(r, quietMs));
  }
  return events.map((e) => `${e.type} ${e.name}`);
}

describe("moat up: envd gaps the SDK's suite found", { timeout: 600_000 }, () => {
  let moat: RunningMoat;
  let sbx: Sandbox;

  before(async () => {
    // A pool of one: the first sandbox is a claimed pool entry, later ones restore the snapshot.
    moat = await startMoat({ env: { MOAT_POOL_SIZE: "1" } });
    useMoat(moat);
    sbx = await Sandbox.create("base", { timeoutMs: 300_000 });
  });

  after(async () => {
    await sbx?.kill().catch(() => undefined);
    await moat?.cleanup();
  });

  test("metadata: written (multipart and octet-stream), read by getInfo and list, replaced on overwrite", async () => {
    const info = await sbx.files.write("meta.txt", "with metadata", {
      metadata: { author: "mish", purpose: "upload" },
    });
    assert.deepEqual(info.metadata, { author: "mish", purpose: "upload" });
    assert.deepEqual((await sbx.files.getInfo("meta.txt")).metadata, { author: "mish", purpose: "upload" });

    const raw = await sbx.files.write("meta-raw.txt", "raw", { metadata: { k: "v" }, useOctetStream: true });
    assert.deepEqual(raw.metadata, { k: "v" });
    assert.deepEqual((await sbx.files.getInfo("meta-raw.txt")).metadata, { k: "v" });

    const many = await sbx.files.writeFiles(
      [
        { path: "metadir/one.txt", data: "1" },
        { path: "metadir/two.txt", data: "2" },
      ],
      { metadata: { source: "suite" } },
    );
    for (const written of many) assert.deepEqual(written.metadata, { source: "suite" });
    const listed = await sbx.files.list("metadir");
    assert.deepEqual(
      listed.map((e) => [e.name, e.metadata]),
      [
        ["one.txt", { source: "suite" }],
        ["two.txt", { source: "suite" }],
      ],
    );

    const plain = await sbx.files.write("meta.txt", "overwritten without metadata");
    assert.equal(plain.metadata, undefined);
    assert.equal((await sbx.files.getInfo("meta.txt")).metadata, undefined);
  });

  test("metadata follows rename (a file and a directory), goes with remove and with a file a process replaced", async () => {
    await sbx.files.write("old-name.txt", "x", { metadata: { stage: "renamed" } });
    const moved = await sbx.files.rename("old-name.txt", "new-name.txt");
    assert.deepEqual(moved.metadata, { stage: "renamed" });
    assert.deepEqual((await sbx.files.getInfo("new-name.txt")).metadata, { stage: "renamed" });

    await sbx.files.write("tree/deep/f.txt", "x", { metadata: { in: "tree" } });
    await sbx.files.rename("tree", "tree2");
    assert.deepEqual((await sbx.files.getInfo("tree2/deep/f.txt")).metadata, { in: "tree" });

    await sbx.files.remove("new-name.txt");
    await sbx.files.write("new-name.txt", "a new file under the old name");
    assert.equal((await sbx.files.getInfo("new-name.txt")).metadata, undefined);

    // A process puts another file under its name (as editors save): that one has no metadata.
    await sbx.files.write("replaced.txt", "x", { metadata: { a: "b" } });
    await sbx.commands.run(`echo new > ${HOME}/.tmp-save && mv ${HOME}/.tmp-save ${HOME}/replaced.txt`);
    assert.equal((await sbx.files.getInfo("replaced.txt")).metadata, undefined);
    // A process that writes into it keeps it (as with xattrs).
    await sbx.files.write("appended.txt", "x", { metadata: { a: "b" } });
    await sbx.commands.run(`echo more >> ${HOME}/appended.txt`);
    assert.deepEqual((await sbx.files.getInfo("appended.txt")).metadata, { a: "b" });
  });

  test("metadata set as xattrs where the filesystem has them (tmpfs) shows in getInfo", async () => {
    await sbx.files.write("/dev/shm/x.txt", "x");
    await sbx.commands.run(
      `python3 -c "import os; os.setxattr('/dev/shm/x.txt', 'user.e2b.author', b'mish')"`,
    );
    assert.deepEqual((await sbx.files.getInfo("/dev/shm/x.txt")).metadata, { author: "mish" });
    await sbx.files.write("/dev/shm/y.txt", "y", { metadata: { via: "sdk" } });
    const got = await sbx.commands.run(
      `python3 -c "import os; print(os.getxattr('/dev/shm/y.txt', 'user.e2b.via').decode())"`,
    );
    assert.equal(got.stdout, "sdk\n");
  });

  test("metadata survives pause and resume, and sandboxes from the pool or the snapshot have their own", async () => {
    const other = await Sandbox.create("base", { timeoutMs: 120_000 });
    try {
      await other.files.write("kept.txt", "x", { metadata: { through: "pause" } });
      assert.equal(await other.pause(), true);
      const resumed = await Sandbox.connect(other.sandboxId);
      assert.deepEqual((await resumed.files.getInfo("kept.txt")).metadata, { through: "pause" });
      assert.deepEqual((await resumed.files.list(".")).find((e) => e.name === "kept.txt")?.metadata, {
        through: "pause",
      });
      // Still tied to the file after the restore: a replaced one has none.
      await resumed.commands.run(`echo new > ${HOME}/.tmp-save && mv ${HOME}/.tmp-save ${HOME}/kept.txt`);
      assert.equal((await resumed.files.getInfo("kept.txt")).metadata, undefined);
      // Nothing of another sandbox's metadata.
      await assert.rejects(sbx.files.getInfo("kept.txt"));
    } finally {
      await other.kill();
    }
  });

  test("write over a file keeps its inode: a hard link and a reader holding it open see the new content", async () => {
    const file = `${HOME}/inplace.txt`;
    await sbx.files.write(file, "first version, longer than the next");
    const inode = (await sbx.commands.run(`stat -c %i ${file}`)).stdout;
    await sbx.commands.run(`ln ${file} ${HOME}/inplace-link.txt`);
    // Opens the file, waits for a signal, then reads what its descriptor now shows.
    const reader = await sbx.commands.run(
      `python3 -c "
import os, time
f = open('${file}')
open('${HOME}/reader-ready', 'w').close()
while not os.path.exists('${HOME}/go'):
    time.sleep(0.05)
f.seek(0)
print(f.read())
"`,
      { background: true },
    );
    for (let i = 0; i < 100 && !(await sbx.files.exists(`${HOME}/reader-ready`)); i++) {
      await new Promise((r) => setTimeout(r, 50));
    }
    await sbx.files.write(file, "second");
    assert.equal((await sbx.commands.run(`stat -c %i ${file}`)).stdout, inode);
    assert.equal(await sbx.files.read(`${HOME}/inplace-link.txt`), "second");
    await sbx.files.write(`${HOME}/go`, "");
    assert.equal((await reader.wait()).stdout, "second\n");
  });

  test("watchDir sees CREATE, CHMOD, WRITE for a new file and CHMOD, WRITE over it (multipart and raw)", async () => {
    for (const useOctetStream of [false, true]) {
      const dir = `${HOME}/watched-${useOctetStream ? "raw" : "multipart"}`;
      await sbx.files.makeDir(dir);
      const events: FilesystemEvent[] = [];
      const handle = await sbx.files.watchDir(dir, (e) => {
        events.push(e);
      });
      try {
        await sbx.files.write(`${dir}/f.txt`, "first", { useOctetStream });
        assert.deepEqual(await quietEvents(events), ["create f.txt", "chmod f.txt", "write f.txt"]);
        events.length = 0;
        await sbx.files.write(`${dir}/f.txt`, "the second version", { useOctetStream });
        assert.deepEqual(await quietEvents(events), ["chmod f.txt", "write f.txt"]);
      } finally {
        await handle.stop();
      }
    }
  });

  test("setWorkdir on a directory no step creates: the build makes it, owned by the USER", async () => {
    const template = Template().fromBaseImage().setUser("user").setWorkdir("/srv/app");
    const logs: string[] = [];
    await Template.build(template, "moat-workdir", {
      cpuCount: 1,
      memoryMB: 512,
      onBuildLogs: (entry) => logs.push(entry.message),
    }).catch((err: unknown) => {
      throw new Error(`the build failed: ${String(err)}\n${logs.join("\n")}`);
    });
    const made = await Sandbox.create("moat-workdir", { timeoutMs: 60_000 });
    try {
      const r = await made.commands.run("pwd; stat -c '%U %a' /srv/app; touch here && echo writable");
      assert.equal(r.stdout, "/srv/app\nuser 755\nwritable\n");
    } finally {
      await made.kill();
    }
  });
});
