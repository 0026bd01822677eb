/**
 * envd's filesystem.Filesystem service, driven by the official e2b SDK in debug mode (and by raw
 * Connect requests for what the SDK never sends). Fixtures live in a fresh directory under /tmp
 * owned by `user`; the test process runs as root and prepares or inspects files directly.
 */
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import {
  chmod,
  chown,
  mkdir,
  mkdtemp,
  readdir,
  readFile,
  readlink,
  rename,
  rm,
  stat,
  symlink,
  writeFile,
} from "node:fs/promises";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import {
  AuthenticationError,
  FileNotFoundError,
  type FilesystemEvent,
  FilesystemEventType,
  InvalidArgumentError,
  NotFoundError,
  type Sandbox,
  SandboxError,
} from "e2b";
import { debugSandbox, ENVD_URL, type RunningEnvd, startEnvd } from "../helpers/envd.js";

let envd: RunningEnvd;
let sandbox: Sandbox;
let base: string;
let userIds: { uid: number; gid: number };

before(async () => {
  envd = await startEnvd();
  sandbox = await debugSandbox();
  userIds = {
    uid: Number(execFileSync("id", ["-u", "user"]).toString()),
    gid: Number(execFileSync("id", ["-g", "user"]).toString()),
  };
  base = await mkdtemp("/tmp/moat-test-fs-");
  await chown(base, userIds.uid, userIds.gid);
});

after(async () => {
  await envd?.stop();
  if (base) await rm(base, { recursive: true, force: true });
});

let counter = 0;
/** A fresh directory (owned by `user`) for one test. */
async function freshDir(name = "t"): Promise<string> {
  const dir = path.join(base, `${name}-${++counter}`);
  await mkdir(dir);
  await chown(dir, userIds.uid, userIds.gid);
  return dir;
}

/** Writes a file as `user` would own it. */
async function userFile(file: string, content: string): Promise<void> {
  await writeFile(file, content);
  await chown(file, userIds.uid, userIds.gid);
}

async function waitFor(
  what: string,
  check: () => boolean,
  seen: unknown[] = [],
  timeoutMs = 5000,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}; saw ${JSON.stringify(seen)}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

function has(events: FilesystemEvent[], type: FilesystemEventType, name: string): boolean {
  return events.some((e) => e.type === type && e.name === name);
}

/** A unary Connect call in JSON, as the SDK makes it; returns the status and the parsed body. */
async function rpc(
  method: string,
  body: string | object,
  headers: Record<string, string> = {},
): Promise<{ status: number; json: Record<string, unknown> }> {
  const res = await fetch(`${ENVD_URL}/filesystem.Filesystem/${method}`, {
    method: "POST",
    headers: { "content-type": "application/json", "connect-protocol-version": "1", ...headers },
    body: typeof body === "string" ? body : JSON.stringify(body),
  });
  const text = await res.text();
  return { status: res.status, json: text ? (JSON.parse(text) as Record<string, unknown>) : {} };
}

function basicAuth(user: string): Record<string, string> {
  return { authorization: `Basic ${Buffer.from(`${user}:`).toString("base64")}` };
}

/** How many of envd's inotify watches are on these directories. */
async function envdWatchesOn(dirs: string[]): Promise<number> {
  const inodes = new Set<string>();
  for (const d of dirs) inodes.add((await stat(d)).ino.toString(16));
  const pid = envd.child.pid!;
  let count = 0;
  for (const fd of await readdir(`/proc/${pid}/fd`)) {
    const target = await readlink(`/proc/${pid}/fd/${fd}`).catch(() => "");
    if (target !== "anon_inode:inotify") continue;
    const info = await readFile(`/proc/${pid}/fdinfo/${fd}`, "utf8").catch(() => "");
    for (const line of info.split("\n")) {
      const ino = /^inotify wd:\S+ ino:([0-9a-f]+)/.exec(line)?.[1];
      if (ino && inodes.has(ino)) count++;
    }
  }
  return count;
}

describe("Stat", () => {
  test("getInfo describes a file the way envd does", async () => {
    const dir = await freshDir();
    const file = path.join(dir, "a.txt");
    await userFile(file, "Hello, World!");
    await chmod(file, 0o644);
    const info = await sandbox.files.getInfo(file);
    assert.equal(info.name, "a.txt");
    assert.equal(info.type, "file");
    assert.equal(info.path, file);
    assert.equal(info.size, 13);
    assert.equal(info.mode, 0o644);
    assert.equal(info.permissions, "-rw-r--r--");
    assert.equal(info.owner, "user");
    assert.equal(info.group, "user");
    assert.ok(info.modifiedTime instanceof Date);
    assert.ok(Math.abs(info.modifiedTime!.getTime() - (await stat(file)).mtimeMs) < 1000);
    assert.equal(info.symlinkTarget, undefined);
  });

  test("getInfo of a directory", async () => {
    const dir = await freshDir();
    await chmod(dir, 0o755);
    const info = await sandbox.files.getInfo(dir);
    assert.equal(info.type, "dir");
    assert.equal(info.mode, 0o755);
    assert.equal(info.permissions, "drwxr-xr-x");
  });

  test("exists is true for files and directories and false for missing paths", async () => {
    const dir = await freshDir();
    await userFile(path.join(dir, "f"), "x");
    assert.equal(await sandbox.files.exists(dir), true);
    assert.equal(await sandbox.files.exists(path.join(dir, "f")), true);
    assert.equal(await sandbox.files.exists(path.join(dir, "missing")), false);
    assert.equal(await sandbox.files.exists(path.join(dir, "f", "below-a-file")), false);
  });

  test("getInfo of a missing path is FileNotFoundError", async () => {
    const dir = await freshDir();
    await assert.rejects(sandbox.files.getInfo(path.join(dir, "missing")), (err: unknown) => {
      assert.ok(err instanceof FileNotFoundError);
      assert.ok(err instanceof NotFoundError);
      return true;
    });
  });

  test("relative paths and ~ resolve against the user's home", async () => {
    const name = `moat-test-fs-rel-${randomBytes(4).toString("hex")}`;
    try {
      assert.equal(await sandbox.files.makeDir(name), true);
      const info = await sandbox.files.getInfo(`~/${name}`);
      assert.equal(info.path, `/home/user/${name}`);
      const asRoot = await sandbox.files.makeDir(name, { user: "root" });
      assert.equal(asRoot, true, "root's relative path is under /root");
      assert.equal((await sandbox.files.getInfo(`/root/${name}`, { user: "root" })).owner, "root");
    } finally {
      await rm(`/home/user/${name}`, { recursive: true, force: true });
      await rm(`/root/${name}`, { recursive: true, force: true });
    }
  });

  test("an unknown user is AuthenticationError", async () => {
    await assert.rejects(sandbox.files.getInfo(base, { user: "no-such-user-xyz" }), AuthenticationError);
  });
});

describe("symlinks", () => {
  test("a link is described with its target's type and its own permissions", async () => {
    const dir = await freshDir();
    await userFile(path.join(dir, "target.txt"), "abc");
    await mkdir(path.join(dir, "target-dir"));
    await symlink(path.join(dir, "target.txt"), path.join(dir, "file-link"));
    await symlink("target-dir", path.join(dir, "dir-link"));
    await symlink(path.join(dir, "nowhere"), path.join(dir, "dangling"));

    const fileLink = await sandbox.files.getInfo(path.join(dir, "file-link"));
    assert.equal(fileLink.type, "file");
    assert.equal(fileLink.name, "file-link");
    assert.equal(fileLink.path, path.join(dir, "file-link"));
    assert.equal(fileLink.symlinkTarget, path.join(dir, "target.txt"));
    assert.equal(fileLink.permissions, "Lrwxrwxrwx");

    const dirLink = await sandbox.files.getInfo(path.join(dir, "dir-link"));
    assert.equal(dirLink.type, "dir");
    assert.equal(dirLink.symlinkTarget, path.join(dir, "target-dir"));

    // Unresolvable: type unspecified, which the SDK's list drops.
    const names = (await sandbox.files.list(dir)).map((e) => e.name);
    assert.deepEqual(names, ["dir-link", "file-link", "target-dir", "target.txt"]);
  });

  test("listing does not descend into symlinked directories, so link loops end", async () => {
    const dir = await freshDir();
    await mkdir(path.join(dir, "sub"));
    await userFile(path.join(dir, "sub", "f"), "x");
    await symlink("..", path.join(dir, "sub", "up"));
    await symlink(dir, path.join(dir, "self"));
    const entries = await sandbox.files.list(dir, { depth: 10 });
    assert.deepEqual(
      entries.map((e) => path.relative(dir, e.path)),
      ["self", "sub", "sub/f", "sub/up"],
    );
  });

  test("listing through a symlinked directory keeps the requested path", async () => {
    const dir = await freshDir();
    await mkdir(path.join(dir, "real"));
    await userFile(path.join(dir, "real", "f"), "x");
    await symlink("real", path.join(dir, "alias"));
    const [entry] = await sandbox.files.list(path.join(dir, "alias"));
    assert.equal(entry?.path, path.join(dir, "alias", "f"));
  });
});

describe("MakeDir", () => {
  test("creates parents owned by the user; true then false", async () => {
    const dir = await freshDir();
    const nested = path.join(dir, "a", "b", "c");
    assert.equal(await sandbox.files.makeDir(nested), true);
    assert.equal(await sandbox.files.makeDir(nested), false);
    for (const d of ["a", "a/b", "a/b/c"]) {
      const st = await stat(path.join(dir, d));
      assert.ok(st.isDirectory());
      assert.equal(st.uid, userIds.uid, `${d} owned by user`);
      assert.equal(st.gid, userIds.gid);
    }
    const info = await sandbox.files.getInfo(nested);
    assert.equal(info.owner, "user");
    assert.equal(info.group, "user");
    assert.equal(info.mode, 0o755);
  });

  test("as root, directories are owned by root", async () => {
    const dir = await freshDir();
    assert.equal(await sandbox.files.makeDir(path.join(dir, "r", "s"), { user: "root" }), true);
    assert.equal((await sandbox.files.getInfo(path.join(dir, "r"))).owner, "root");
    assert.equal((await sandbox.files.getInfo(path.join(dir, "r", "s"))).owner, "root");
  });

  test("over a file is InvalidArgumentError; below a file too", async () => {
    const dir = await freshDir();
    await userFile(path.join(dir, "f"), "x");
    await assert.rejects(sandbox.files.makeDir(path.join(dir, "f")), InvalidArgumentError);
    await assert.rejects(sandbox.files.makeDir(path.join(dir, "f", "sub")), InvalidArgumentError);
  });

  test("the response carries the new directory's entry", async () => {
    const dir = await freshDir();
    const { status, json } = await rpc("MakeDir", { path: path.join(dir, "new") });
    assert.equal(status, 200);
    const entry = json.entry as Record<string, unknown>;
    assert.equal(entry.name, "new");
    assert.equal(entry.type, "FILE_TYPE_DIRECTORY");
    assert.equal(entry.owner, "user");
  });
});

describe("ListDir", () => {
  test("depth 1, 2 and 3 list in lexical pre-order", async () => {
    const dir = await freshDir();
    for (const d of ["subdir1/subdir1_1", "subdir1/subdir1_2", "subdir2/subdir2_1", "subdir2/subdir2_2"]) {
      await sandbox.files.makeDir(path.join(dir, d));
    }
    await userFile(path.join(dir, "file1.txt"), "Hello, world!");

    const one = await sandbox.files.list(dir);
    assert.deepEqual(
      one.map((e) => [e.name, e.type]),
      [
        ["file1.txt", "file"],
        ["subdir1", "dir"],
        ["subdir2", "dir"],
      ],
    );
    assert.deepEqual(await sandbox.files.list(dir, { depth: 1 }), one);

    const expected = [
      "file1.txt",
      "subdir1",
      "subdir1/subdir1_1",
      "subdir1/subdir1_2",
      "subdir2",
      "subdir2/subdir2_1",
      "subdir2/subdir2_2",
    ];
    for (const depth of [2, 3]) {
      const entries = await sandbox.files.list(dir, { depth });
      assert.deepEqual(
        entries.map((e) => path.relative(dir, e.path)),
        expected,
        `depth ${depth}`,
      );
    }
    const file = one[0]!;
    assert.equal(file.size, 13);
    assert.equal(file.owner, "user");
    assert.equal(one[1]!.owner, "user");
  });

  test("an empty directory lists nothing", async () => {
    assert.deepEqual(await sandbox.files.list(await freshDir()), []);
  });

  test("a file is InvalidArgumentError, a missing path FileNotFoundError", async () => {
    const dir = await freshDir();
    await userFile(path.join(dir, "f"), "x");
    await assert.rejects(sandbox.files.list(path.join(dir, "f")), InvalidArgumentError);
    await assert.rejects(sandbox.files.list(path.join(dir, "missing")), FileNotFoundError);
  });
});

describe("Move", () => {
  test("rename moves a file, creating the destination's parents for the user", async () => {
    const dir = await freshDir();
    await userFile(path.join(dir, "a.txt"), "content");
    const entry = await sandbox.files.rename(path.join(dir, "a.txt"), path.join(dir, "x", "y", "b.txt"));
    assert.equal(entry.name, "b.txt");
    assert.equal(entry.path, path.join(dir, "x", "y", "b.txt"));
    assert.equal(entry.type, "file");
    assert.equal(await readFile(path.join(dir, "x", "y", "b.txt"), "utf8"), "content");
    assert.equal(await sandbox.files.exists(path.join(dir, "a.txt")), false);
    assert.equal((await stat(path.join(dir, "x"))).uid, userIds.uid);
    assert.equal((await stat(path.join(dir, "x", "y"))).uid, userIds.uid);
  });

  test("rename replaces a file and moves directories", async () => {
    const dir = await freshDir();
    await userFile(path.join(dir, "new"), "new");
    await userFile(path.join(dir, "old"), "old");
    await sandbox.files.rename(path.join(dir, "new"), path.join(dir, "old"));
    assert.equal(await readFile(path.join(dir, "old"), "utf8"), "new");

    await mkdir(path.join(dir, "d"));
    await userFile(path.join(dir, "d", "inner"), "i");
    const moved = await sandbox.files.rename(path.join(dir, "d"), path.join(dir, "e"));
    assert.equal(moved.type, "dir");
    assert.equal(await readFile(path.join(dir, "e", "inner"), "utf8"), "i");
  });

  test("a missing source is FileNotFoundError and creates nothing", async () => {
    const dir = await freshDir();
    await assert.rejects(
      sandbox.files.rename(path.join(dir, "missing"), path.join(dir, "p", "q")),
      FileNotFoundError,
    );
    assert.equal(await sandbox.files.exists(path.join(dir, "p")), false);
  });

  test("a file onto a non-empty directory is InvalidArgumentError", async () => {
    const dir = await freshDir();
    await userFile(path.join(dir, "f"), "x");
    await mkdir(path.join(dir, "d"));
    await userFile(path.join(dir, "d", "g"), "y");
    await assert.rejects(
      sandbox.files.rename(path.join(dir, "f"), path.join(dir, "d")),
      InvalidArgumentError,
    );
  });
});

describe("Remove", () => {
  test("removes files and whole trees; a missing path is fine", async () => {
    const dir = await freshDir();
    await userFile(path.join(dir, "f"), "x");
    await sandbox.files.remove(path.join(dir, "f"));
    assert.equal(await sandbox.files.exists(path.join(dir, "f")), false);

    await sandbox.files.makeDir(path.join(dir, "tree", "a", "b"));
    await userFile(path.join(dir, "tree", "a", "b", "leaf"), "x");
    await sandbox.files.remove(path.join(dir, "tree"));
    assert.equal(await sandbox.files.exists(path.join(dir, "tree")), false);

    await sandbox.files.remove(path.join(dir, "never-existed"));
    await userFile(path.join(dir, "file"), "x");
    await sandbox.files.remove(path.join(dir, "file", "below-a-file"));
  });

  test("removing a symlink leaves its target", async () => {
    const dir = await freshDir();
    await mkdir(path.join(dir, "target"));
    await userFile(path.join(dir, "target", "keep"), "x");
    await symlink("target", path.join(dir, "link"));
    await sandbox.files.remove(path.join(dir, "link"));
    assert.equal(await readFile(path.join(dir, "target", "keep"), "utf8"), "x");
  });
});

describe("permissions", () => {
  test("user cannot reach into a root-only directory; root can", async () => {
    const dir = await freshDir();
    const secret = path.join(dir, "secret");
    await mkdir(secret, { mode: 0o700 });
    await writeFile(path.join(secret, "key"), "k");
    const isDenied = (err: unknown) => {
      assert.ok(err instanceof SandboxError);
      assert.match(err.message, /permission_denied/);
      return true;
    };
    await assert.rejects(sandbox.files.list(secret), isDenied);
    await assert.rejects(sandbox.files.getInfo(path.join(secret, "key")), isDenied);
    await assert.rejects(sandbox.files.makeDir(path.join(secret, "d")), isDenied);
    await assert.rejects(sandbox.files.remove(path.join(secret, "key")), isDenied);
    await assert.rejects(sandbox.files.rename(path.join(secret, "key"), path.join(dir, "stolen")), isDenied);
    await assert.rejects(sandbox.files.remove(secret), isDenied);
    await assert.rejects(
      sandbox.files.watchDir(secret, () => {}),
      (err: unknown) => err instanceof SandboxError,
    );
    assert.equal(await readFile(path.join(secret, "key"), "utf8"), "k", "nothing was touched");

    assert.equal((await sandbox.files.list(secret, { user: "root" })).length, 1);
    assert.equal(await sandbox.files.makeDir(path.join(secret, "d"), { user: "root" }), true);
    await sandbox.files.remove(secret, { user: "root" });
    assert.equal(await sandbox.files.exists(secret, { user: "root" }), false);
  });

  test("the sticky bit keeps others' files in a shared directory", async () => {
    const dir = await freshDir();
    const shared = path.join(dir, "shared");
    await mkdir(shared);
    await chmod(shared, 0o1777);
    await writeFile(path.join(shared, "roots"), "r");
    await assert.rejects(sandbox.files.remove(path.join(shared, "roots")), SandboxError);
    await userFile(path.join(shared, "mine"), "m");
    await sandbox.files.remove(path.join(shared, "mine"));
    assert.equal(await sandbox.files.exists(path.join(shared, "mine")), false);
  });
});

describe("WatchDir", () => {
  test("reports create, write, chmod, rename and remove", async () => {
    const dir = await freshDir();
    await userFile(path.join(dir, "existing"), "old");
    const events: FilesystemEvent[] = [];
    const handle = await sandbox.files.watchDir(dir, (e) => {
      events.push(e);
    });
    try {
      await writeFile(path.join(dir, "new.txt"), "hello");
      await waitFor("create new.txt", () => has(events, FilesystemEventType.CREATE, "new.txt"), events);
      await waitFor("write new.txt", () => has(events, FilesystemEventType.WRITE, "new.txt"), events);

      await writeFile(path.join(dir, "existing"), "new content");
      await waitFor("write existing", () => has(events, FilesystemEventType.WRITE, "existing"), events);

      await chmod(path.join(dir, "existing"), 0o600);
      await waitFor("chmod existing", () => has(events, FilesystemEventType.CHMOD, "existing"), events);

      await rename(path.join(dir, "existing"), path.join(dir, "renamed"));
      await waitFor("rename existing", () => has(events, FilesystemEventType.RENAME, "existing"), events);
      await waitFor("create renamed", () => has(events, FilesystemEventType.CREATE, "renamed"), events);

      await rm(path.join(dir, "new.txt"));
      await waitFor("remove new.txt", () => has(events, FilesystemEventType.REMOVE, "new.txt"), events);

      await mkdir(path.join(dir, "subdir"));
      await waitFor("create subdir", () => has(events, FilesystemEventType.CREATE, "subdir"), events);
      assert.ok(!events.some((e) => e.entry), "no entries unless asked");
    } finally {
      await handle.stop();
    }
  });

  test("non-recursive watches ignore nested changes", async () => {
    const dir = await freshDir();
    await mkdir(path.join(dir, "nested"));
    const events: FilesystemEvent[] = [];
    const handle = await sandbox.files.watchDir(dir, (e) => {
      events.push(e);
    });
    try {
      await writeFile(path.join(dir, "nested", "deep.txt"), "x");
      await writeFile(path.join(dir, "top.txt"), "x");
      await waitFor("create top.txt", () => has(events, FilesystemEventType.CREATE, "top.txt"), events);
      await new Promise((r) => setTimeout(r, 200));
      assert.ok(!events.some((e) => e.name.includes("deep")), JSON.stringify(events));
    } finally {
      await handle.stop();
    }
  });

  test("recursive watches see nested changes and new directories' contents", async () => {
    const dir = await freshDir();
    await mkdir(path.join(dir, "nested"));
    await userFile(path.join(dir, "nested", "f.txt"), "v1");
    const events: FilesystemEvent[] = [];
    const handle = await sandbox.files.watchDir(
      dir,
      (e) => {
        events.push(e);
      },
      { recursive: true },
    );
    try {
      await writeFile(path.join(dir, "nested", "f.txt"), "version 2");
      await waitFor(
        "write nested/f.txt",
        () => has(events, FilesystemEventType.WRITE, "nested/f.txt"),
        events,
      );

      // The SDK's own scenario: a new folder, then a file written into it once its CREATE is seen.
      assert.equal(await sandbox.files.makeDir(path.join(dir, "added")), true);
      await waitFor("create added", () => has(events, FilesystemEventType.CREATE, "added"), events);
      await writeFile(path.join(dir, "added", "g.txt"), "content");
      await waitFor("write added/g.txt", () => has(events, FilesystemEventType.WRITE, "added/g.txt"), events);

      // Made in one go: everything inside is reported even though it predates the watch of it.
      await mkdir(path.join(dir, "p", "q", "r"), { recursive: true });
      await writeFile(path.join(dir, "p", "q", "r", "deep.txt"), "deep");
      await waitFor(
        "create p/q/r/deep.txt",
        () => has(events, FilesystemEventType.CREATE, "p/q/r/deep.txt"),
        events,
      );
      for (const name of ["p", "p/q", "p/q/r"])
        assert.ok(has(events, FilesystemEventType.CREATE, name), name);

      // A directory moved within the tree is watched at its new path.
      await rename(path.join(dir, "p"), path.join(dir, "p2"));
      await waitFor("rename p", () => has(events, FilesystemEventType.RENAME, "p"), events);
      await writeFile(path.join(dir, "p2", "q", "r", "deep.txt"), "deeper");
      await waitFor(
        "write p2/q/r/deep.txt",
        () => has(events, FilesystemEventType.WRITE, "p2/q/r/deep.txt"),
        events,
      );

      await rm(path.join(dir, "nested"), { recursive: true });
      await waitFor(
        "remove nested/f.txt",
        () => has(events, FilesystemEventType.REMOVE, "nested/f.txt"),
        events,
      );
      await waitFor("remove nested", () => has(events, FilesystemEventType.REMOVE, "nested"), events);
      await new Promise((r) => setTimeout(r, 100));
      assert.ok(
        !events.some((e) => e.name.startsWith("nested/nested")),
        `no events about the removed directory itself: ${JSON.stringify(events)}`,
      );
    } finally {
      await handle.stop();
    }
  });

  test("includeEntry attaches entries to create and write events", async () => {
    const dir = await freshDir();
    const events: FilesystemEvent[] = [];
    const handle = await sandbox.files.watchDir(
      dir,
      (e) => {
        events.push(e);
      },
      { includeEntry: true },
    );
    try {
      await userFile(path.join(dir, "e.txt"), "12345");
      await waitFor("write e.txt", () => has(events, FilesystemEventType.WRITE, "e.txt"), events);
      const write = events.find((e) => e.type === FilesystemEventType.WRITE && e.name === "e.txt")!;
      assert.equal(write.entry?.path, path.join(dir, "e.txt"));
      assert.equal(write.entry?.type, "file");
      assert.equal(write.entry?.size, 5);
      await rm(path.join(dir, "e.txt"));
      await waitFor("remove e.txt", () => has(events, FilesystemEventType.REMOVE, "e.txt"), events);
      const removed = events.find((e) => e.type === FilesystemEventType.REMOVE)!;
      assert.equal(removed.entry, undefined);
    } finally {
      await handle.stop();
    }
  });

  test("stop() ends the watch and envd releases its inotify watches", async () => {
    const dir = await freshDir();
    await mkdir(path.join(dir, "a", "b"), { recursive: true });
    const watched = [dir, path.join(dir, "a"), path.join(dir, "a", "b")];
    const events: FilesystemEvent[] = [];
    const handle = await sandbox.files.watchDir(
      dir,
      (e) => {
        events.push(e);
      },
      { recursive: true },
    );
    assert.equal(await envdWatchesOn(watched), 3, "one inotify watch per directory");
    await handle.stop();
    const deadline = Date.now() + 5000;
    while ((await envdWatchesOn(watched)) > 0 && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 50));
    }
    assert.equal(await envdWatchesOn(watched), 0);
    await writeFile(path.join(dir, "after-stop"), "x");
    await new Promise((r) => setTimeout(r, 200));
    assert.ok(!events.some((e) => e.name === "after-stop"));
  });

  test("removing the watched directory reports REMOVE '.' and ends the watch", async () => {
    const dir = await freshDir();
    await userFile(path.join(dir, "f"), "x");
    const events: FilesystemEvent[] = [];
    let exited: Error | null | undefined;
    const handle = await sandbox.files.watchDir(
      dir,
      (e) => {
        events.push(e);
      },
      {
        onExit: (err) => {
          exited = err ?? null;
        },
      },
    );
    try {
      await rm(dir, { recursive: true });
      await waitFor("remove .", () => has(events, FilesystemEventType.REMOVE, "."), events);
      assert.ok(has(events, FilesystemEventType.REMOVE, "f"));
      await waitFor("the stream to end", () => exited !== undefined);
      assert.equal(exited, null, "ended cleanly");
    } finally {
      await handle.stop();
    }
  });

  test("a missing directory is FileNotFoundError, a file InvalidArgumentError", async () => {
    const dir = await freshDir();
    await userFile(path.join(dir, "f"), "x");
    await assert.rejects(
      sandbox.files.watchDir(path.join(dir, "missing"), () => {}),
      FileNotFoundError,
    );
    await assert.rejects(
      sandbox.files.watchDir(path.join(dir, "f"), () => {}),
      InvalidArgumentError,
    );
  });

  test("keepalives flow while nothing happens", async () => {
    const dir = await freshDir();
    const controller = new AbortController();
    const body = Buffer.from(JSON.stringify({ path: dir }));
    const envelope = Buffer.concat([Buffer.from([0, 0, 0, 0, 0]), body]);
    envelope.writeUInt32BE(body.length, 1);
    const res = await fetch(`${ENVD_URL}/filesystem.Filesystem/WatchDir`, {
      method: "POST",
      headers: {
        "content-type": "application/connect+json",
        "connect-protocol-version": "1",
        "keepalive-ping-interval": "1",
      },
      body: envelope,
      signal: controller.signal,
    });
    assert.equal(res.status, 200);
    const reader = res.body!.getReader();
    let buffered = Buffer.alloc(0);
    const messages: Array<Record<string, unknown>> = [];
    const started = Date.now();
    while (messages.length < 2 && Date.now() - started < 5000) {
      const { value, done } = await reader.read();
      if (done) break;
      buffered = Buffer.concat([buffered, Buffer.from(value)]);
      while (buffered.length >= 5 && buffered.length >= 5 + buffered.readUInt32BE(1)) {
        const length = buffered.readUInt32BE(1);
        messages.push(JSON.parse(buffered.subarray(5, 5 + length).toString()) as Record<string, unknown>);
        buffered = buffered.subarray(5 + length);
      }
    }
    controller.abort();
    assert.deepEqual(messages, [{ start: {} }, { keepalive: {} }]);
  });
});

describe("polling watchers", () => {
  test("CreateWatcher, GetWatcherEvents drains, RemoveWatcher stops", async () => {
    const dir = await freshDir();
    const created = await rpc("CreateWatcher", { path: dir, recursive: true, includeEntry: true });
    assert.equal(created.status, 200);
    const id = created.json.watcherId as string;
    assert.match(id, /^w/);

    await writeFile(path.join(dir, "p.txt"), "x");
    const seen: Array<Record<string, unknown>> = [];
    const deadline = Date.now() + 5000;
    while (!seen.some((e) => e.name === "p.txt" && e.type === "EVENT_TYPE_WRITE") && Date.now() < deadline) {
      const { status, json } = await rpc("GetWatcherEvents", { watcherId: id });
      assert.equal(status, 200);
      seen.push(...((json.events as Array<Record<string, unknown>> | undefined) ?? []));
      await new Promise((r) => setTimeout(r, 50));
    }
    const create = seen.find((e) => e.name === "p.txt" && e.type === "EVENT_TYPE_CREATE");
    assert.ok(create, JSON.stringify(seen));
    assert.equal((create.entry as Record<string, unknown>).name, "p.txt");

    const drained = await rpc("GetWatcherEvents", { watcherId: id });
    assert.deepEqual(drained.json, {}, "the queue was drained");

    assert.equal((await rpc("RemoveWatcher", { watcherId: id })).status, 200);
    const gone = await rpc("GetWatcherEvents", { watcherId: id });
    assert.equal(gone.status, 404);
    assert.equal(gone.json.code, "not_found");
    assert.equal((await rpc("RemoveWatcher", { watcherId: id })).json.code, "not_found");
  });

  test("an upload's events are queued when it returns: new CREATE, CHMOD, WRITE; existing CHMOD, WRITE", async () => {
    // What the Python SDK does: watch, write, then poll once and count.
    const dir = await freshDir();
    const { json } = await rpc("CreateWatcher", { path: dir });
    const id = json.watcherId as string;
    const poll = async () =>
      (
        ((await rpc("GetWatcherEvents", { watcherId: id })).json.events as Array<{
          name: string;
          type: string;
        }>) ?? []
      ).map((e) => `${e.type.replace("EVENT_TYPE_", "")} ${e.name}`);
    try {
      await sandbox.files.write(path.join(dir, "w.txt"), "first");
      assert.deepEqual(await poll(), ["CREATE w.txt", "CHMOD w.txt", "WRITE w.txt"]);
      await sandbox.files.write(path.join(dir, "w.txt"), "second, longer");
      assert.deepEqual(await poll(), ["CHMOD w.txt", "WRITE w.txt"]);
      await sandbox.files.write(path.join(dir, "w.txt"), "raw", { useOctetStream: true });
      assert.deepEqual(await poll(), ["CHMOD w.txt", "WRITE w.txt"]);
      await sandbox.files.write(path.join(dir, "empty.txt"), "");
      assert.deepEqual(await poll(), ["CREATE empty.txt", "CHMOD empty.txt"]);
    } finally {
      await rpc("RemoveWatcher", { watcherId: id });
    }
  });

  test("CreateWatcher checks its path like WatchDir", async () => {
    const dir = await freshDir();
    await userFile(path.join(dir, "f"), "x");
    assert.equal((await rpc("CreateWatcher", { path: path.join(dir, "missing") })).json.code, "not_found");
    assert.equal((await rpc("CreateWatcher", { path: path.join(dir, "f") })).json.code, "invalid_argument");
  });
});

describe("bad requests", () => {
  test("malformed or mistyped bodies get Connect JSON errors and envd stays up", async () => {
    const cases: Array<[string, string | object, number, string]> = [
      ["Stat", "{not json", 400, "invalid_argument"],
      ["Stat", { path: 5 }, 400, "invalid_argument"],
      ["Stat", { path: ["a"] }, 400, "invalid_argument"],
      ["ListDir", { path: base, depth: "deep" }, 400, "invalid_argument"],
      ["ListDir", { path: base, depth: -1 }, 400, "invalid_argument"],
      ["Stat", { path: "/tmp/\u0000nul" }, 400, "invalid_argument"],
      ["Move", {}, 400, "invalid_argument"],
      ["Move", { source: base }, 400, "invalid_argument"],
      ["Remove", {}, 400, "invalid_argument"],
      ["Remove", { path: "/" }, 400, "invalid_argument"],
      ["GetWatcherEvents", {}, 404, "not_found"],
      ["RemoveWatcher", { watcherId: "nope" }, 404, "not_found"],
      ["Stat", { path: path.join(base, "missing") }, 404, "not_found"],
      ["Stat", { path: base }, 401, "unauthenticated"],
    ];
    for (const [method, body, status, code] of cases) {
      const headers = code === "unauthenticated" ? basicAuth("nobody-here-xyz") : {};
      const res = await rpc(method, body, headers);
      assert.equal(res.status, status, `${method} ${JSON.stringify(body)}: ${JSON.stringify(res.json)}`);
      assert.equal(res.json.code, code, `${method} ${JSON.stringify(body)}`);
      assert.equal(typeof res.json.message, "string");
    }
    const health = await fetch(`${ENVD_URL}/health`);
    assert.equal(health.status, 204);
  });

  test("unknown fields are ignored and a missing path means the home directory", async () => {
    const res = await rpc("Stat", { path: base, bogus: true });
    assert.equal(res.status, 200);
    const home = await rpc("Stat", {});
    assert.equal((home.json.entry as Record<string, unknown>).path, "/home/user");
  });
});

describe("with /files", () => {
  test("write, read, list and remove round trip", async () => {
    const dir = await freshDir();
    const file = path.join(dir, "w", "hello.txt");
    const written = await sandbox.files.write(file, "Hello!");
    assert.equal(written.path, file);
    assert.equal(await sandbox.files.read(file), "Hello!");
    const info = await sandbox.files.getInfo(file);
    assert.equal(info.owner, "user");
    assert.equal((await sandbox.files.getInfo(path.join(dir, "w"))).owner, "user");
    const asRoot = path.join(dir, "root.txt");
    await sandbox.files.write(asRoot, "r", { user: "root" });
    assert.equal((await sandbox.files.getInfo(asRoot)).owner, "root");
    assert.deepEqual(
      (await sandbox.files.list(dir)).map((e) => e.name),
      ["root.txt", "w"],
    );

    // The SDK's watch scenarios, with files.write doing the writing.
    const events: FilesystemEvent[] = [];
    const handle = await sandbox.files.watchDir(
      dir,
      (e) => {
        events.push(e);
      },
      { recursive: true },
    );
    try {
      await sandbox.files.write(path.join(dir, "root.txt"), "overwritten", { user: "root" });
      await waitFor("write root.txt", () => has(events, FilesystemEventType.WRITE, "root.txt"), events);
      await sandbox.files.write(path.join(dir, "w", "hello.txt"), "nested write");
      await waitFor("write w/hello.txt", () => has(events, FilesystemEventType.WRITE, "w/hello.txt"), events);
      await sandbox.files.makeDir(path.join(dir, "later"));
      await waitFor("create later", () => has(events, FilesystemEventType.CREATE, "later"), events);
      await sandbox.files.write(path.join(dir, "later", "x.txt"), "x");
      await waitFor("write later/x.txt", () => has(events, FilesystemEventType.WRITE, "later/x.txt"), events);
    } finally {
      await handle.stop();
    }
    await sandbox.files.remove(path.join(dir, "w"));
    assert.equal(await sandbox.files.exists(file), false);
  });
});

// Last: it stops the shared envd.
describe("shutdown", () => {
  test("envd stops cleanly with watchers open, ending their streams", async () => {
    const dir = await freshDir();
    let exited: Error | null | undefined;
    await sandbox.files.watchDir(dir, () => {}, {
      recursive: true,
      onExit: (err) => {
        exited = err ?? null;
      },
    });
    assert.equal((await rpc("CreateWatcher", { path: dir })).status, 200);
    await envd.stop();
    assert.equal(envd.child.exitCode, 0, envd.log().slice(-2000));
    await waitFor("the watch stream to end", () => exited !== undefined);
  });
});
