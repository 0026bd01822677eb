import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { diskSizeFromEnv } from "../src/config.js";

describe("MOAT_DISK_SIZE_MB", () => {
  test("default 10 GiB; 0 turns disks off; a size a disk can have, else a clear error", () => {
    assert.equal(diskSizeFromEnv(undefined), 10240);
    assert.equal(diskSizeFromEnv(""), 10240);
    assert.equal(diskSizeFromEnv("0"), 0);
    assert.equal(diskSizeFromEnv("512"), 512);
    for (const bad of ["63", "1.5", "-1", "big", String(2 * 1024 * 1024)]) {
      assert.throws(() => diskSizeFromEnv(bad), /MOAT_DISK_SIZE_MB must be 0 \(no limit\) or/, bad);
    }
  });
});
