import assert from "node:assert/strict";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { test } from "node:test";
import { type SandboxRecord, writeRecord } from "../src/sandbox/record.js";

test("writes of one record land in the order they were made, each as the record was at the call", async () => {
  const dataDir = await mkdtemp(path.join(tmpdir(), "moat-record-"));
  try {
    const record = { sandboxID: "s1", dir: "s1", state: "paused", endTime: "a" } as SandboxRecord;
    for (let i = 0; i < 20; i++) {
      // An end-time change while a resume writes its record: two writes in flight at once.
      const first = writeRecord(dataDir, { ...record, state: "paused", endTime: `t${i}` });
      record.state = "running";
      const second = writeRecord(dataDir, { ...record, endTime: `t${i}` });
      record.state = "paused";
      await Promise.all([first, second]);
      const onDisk = JSON.parse(
        await readFile(path.join(dataDir, "sandboxes", "s1", "sandbox.json"), "utf8"),
      );
      assert.equal(onDisk.state, "running", `round ${i}: the later write won`);
    }
  } finally {
    await rm(dataDir, { recursive: true, force: true });
  }
});
