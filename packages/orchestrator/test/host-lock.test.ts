import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { describe, test } from "node:test";
import {
  acquireHostLock,
  HOST_LOCK_PATH,
  HostLockedError,
  hostLockPath,
  netnsLockPath,
} from "../src/host/lock.js";

describe("host lock (one orchestrator per host)", () => {
  test("a second holder is refused while the first lives; release frees it", async () => {
    const dir = await mkdtemp(path.join(tmpdir(), "moat-lock-"));
    const lock = path.join(dir, "orchestrator.pid");
    try {
      const other = spawn("sleep", ["30"]);
      await writeFile(lock, `${other.pid}\n`);
      await assert.rejects(acquireHostLock(lock), (err: unknown) => err instanceof HostLockedError);
      other.kill();
      await new Promise((r) => other.once("exit", r));
      // The holder died without releasing (a crash): the lock is taken over.
      const release = await acquireHostLock(lock);
      assert.equal((await readFile(lock, "utf8")).trim(), String(process.pid));
      await release();
      await assert.rejects(readFile(lock));
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  test("each name prefix has its own lock (the default keeps its path); so does each network namespace", async () => {
    assert.equal(hostLockPath("moat-"), HOST_LOCK_PATH);
    assert.equal(hostLockPath("moat-2-"), "/run/moat/moat-2-orchestrator.pid");
    assert.match(await netnsLockPath(), /^\/run\/moat\/netns-\d+\.pid$/);
  });
});
