import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { EventType } from "@moat/shared/gen/envd/filesystem";
import { permits, stickyAllows } from "../src/services/filesystem/access.js";
import {
  changeEvents,
  classifyBatch,
  type Observation,
  type Snapshot,
} from "../src/services/filesystem/watch-events.js";

const FILE = 0o100000;
const DIR = 0o040000;

function snap(ino: number, overrides: Partial<Snapshot> = {}): Snapshot {
  return {
    dev: 1n,
    ino: BigInt(ino),
    mode: FILE | 0o644,
    uid: 1000,
    gid: 1000,
    size: 10n,
    mtimeNs: 100n,
    ctimeNs: 100n,
    ...overrides,
  };
}

function seen(
  path: string,
  prev: Snapshot | undefined,
  cur: Snapshot | undefined,
  renamed = true,
): Observation {
  return { path, prev, cur, renamed };
}

describe("changeEvents", () => {
  test("content changes are WRITE", () => {
    assert.deepEqual(changeEvents(snap(1), snap(1, { size: 20n, mtimeNs: 200n, ctimeNs: 200n })), [
      EventType.WRITE,
    ]);
    // Same size, newer mtime: an overwrite in place.
    assert.deepEqual(changeEvents(snap(1), snap(1, { mtimeNs: 200n, ctimeNs: 200n })), [EventType.WRITE]);
  });

  test("mode, owner or a lone ctime change is CHMOD", () => {
    assert.deepEqual(changeEvents(snap(1), snap(1, { mode: FILE | 0o600, ctimeNs: 200n })), [
      EventType.CHMOD,
    ]);
    assert.deepEqual(changeEvents(snap(1), snap(1, { uid: 0, ctimeNs: 200n })), [EventType.CHMOD]);
    assert.deepEqual(changeEvents(snap(1), snap(1, { ctimeNs: 200n })), [EventType.CHMOD]);
  });

  test("a write and a chmod between two looks are both reported", () => {
    assert.deepEqual(changeEvents(snap(1), snap(1, { size: 1n, mtimeNs: 200n, mode: FILE | 0o755 })), [
      EventType.WRITE,
      EventType.CHMOD,
    ]);
  });

  test("nothing changed, nothing reported", () => {
    assert.deepEqual(changeEvents(snap(1), snap(1)), []);
  });

  test("a directory whose children changed is not written", () => {
    const dir = snap(1, { mode: DIR | 0o755 });
    assert.deepEqual(changeEvents(dir, { ...dir, size: 4096n, mtimeNs: 200n, ctimeNs: 200n }), []);
    assert.deepEqual(changeEvents(dir, { ...dir, mode: DIR | 0o700, ctimeNs: 200n }), [EventType.CHMOD]);
  });
});

describe("classifyBatch", () => {
  test("new entries are CREATE, with WRITE when they already have content", () => {
    assert.deepEqual(classifyBatch([seen("/w/empty", undefined, snap(1, { size: 0n }))]), [
      { path: "/w/empty", events: [EventType.CREATE] },
    ]);
    assert.deepEqual(classifyBatch([seen("/w/full", undefined, snap(1))]), [
      { path: "/w/full", events: [EventType.CREATE, EventType.WRITE] },
    ]);
    assert.deepEqual(classifyBatch([seen("/w/d", undefined, snap(1, { mode: DIR | 0o755 }))]), [
      { path: "/w/d", events: [EventType.CREATE] },
    ]);
  });

  test("a vanished entry is REMOVE", () => {
    assert.deepEqual(classifyBatch([seen("/w/a", snap(1), undefined)]), [
      { path: "/w/a", events: [EventType.REMOVE] },
    ]);
  });

  test("an inode moving between two paths is RENAME then CREATE", () => {
    const batch = [seen("/w/a", snap(7), undefined), seen("/w/sub/b", undefined, snap(7, { size: 0n }))];
    assert.deepEqual(classifyBatch(batch), [
      { path: "/w/a", events: [EventType.RENAME] },
      { path: "/w/sub/b", events: [EventType.CREATE], movedFrom: "/w/a" },
    ]);
  });

  test("a file renamed over another: the old one is not reported removed", () => {
    const batch = [seen("/w/tmp", snap(2), undefined), seen("/w/target", snap(1), snap(2))];
    assert.deepEqual(classifyBatch(batch), [
      { path: "/w/tmp", events: [EventType.RENAME] },
      { path: "/w/target", events: [EventType.CREATE, EventType.WRITE], movedFrom: "/w/tmp" },
    ]);
  });

  test("a name whose inode was replaced by a new file is REMOVE then CREATE", () => {
    assert.deepEqual(classifyBatch([seen("/w/a", snap(1), snap(2, { size: 0n }))]), [
      { path: "/w/a", events: [EventType.REMOVE, EventType.CREATE] },
    ]);
  });

  test("a name that came and went between two looks is CREATE then REMOVE", () => {
    assert.deepEqual(classifyBatch([seen("/w/tmp", undefined, undefined)]), [
      { path: "/w/tmp", events: [EventType.CREATE, EventType.REMOVE] },
    ]);
    // Only a `change` notification about an unknown missing name: nothing to say.
    assert.deepEqual(classifyBatch([seen("/w/x", undefined, undefined, false)]), []);
  });

  test("inodes on different devices do not pair up", () => {
    const batch = [seen("/w/a", snap(7), undefined), seen("/w/b", undefined, snap(7, { dev: 2n, size: 0n }))];
    assert.deepEqual(classifyBatch(batch), [
      { path: "/w/a", events: [EventType.REMOVE] },
      { path: "/w/b", events: [EventType.CREATE] },
    ]);
  });

  test("unchanged entries produce nothing and order follows the batch", () => {
    const batch = [
      seen("/w/same", snap(1), snap(1)),
      seen("/w/z", undefined, snap(3, { size: 0n })),
      seen("/w/a", snap(4), snap(4, { size: 11n, mtimeNs: 101n })),
    ];
    assert.deepEqual(
      classifyBatch(batch).map((c) => c.path),
      ["/w/z", "/w/a"],
    );
  });
});

describe("permits", () => {
  const user = { uid: 1000, gids: new Set([1000, 27]) };

  test("exactly one class applies: owner, then group, then other", () => {
    assert.equal(permits({ mode: 0o700, uid: 1000, gid: 0 }, user, 4 | 2 | 1), true);
    assert.equal(permits({ mode: 0o077, uid: 1000, gid: 1000 }, user, 4), false, "owner bits win");
    assert.equal(permits({ mode: 0o070, uid: 0, gid: 27 }, user, 4 | 1), true, "supplementary group");
    assert.equal(permits({ mode: 0o707, uid: 0, gid: 27 }, user, 4), false, "group bits win over other");
    assert.equal(permits({ mode: 0o005, uid: 0, gid: 0 }, user, 4 | 1), true);
    assert.equal(permits({ mode: 0o005, uid: 0, gid: 0 }, user, 2), false);
  });

  test("root may do anything", () => {
    assert.equal(permits({ mode: 0o000, uid: 5, gid: 5 }, { uid: 0, gids: new Set([0]) }, 7), true);
  });

  test("sticky directories protect other users' entries", () => {
    const tmp = { mode: 0o41777, uid: 0, gid: 0 };
    assert.equal(stickyAllows(tmp, { mode: 0o644, uid: 0, gid: 0 }, user), false);
    assert.equal(stickyAllows(tmp, { mode: 0o644, uid: 1000, gid: 0 }, user), true);
    assert.equal(stickyAllows({ ...tmp, uid: 1000 }, { mode: 0o644, uid: 0, gid: 0 }, user), true);
    assert.equal(stickyAllows({ ...tmp, mode: 0o40777 }, { mode: 0o644, uid: 0, gid: 0 }, user), true);
  });
});
