import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { fitsPool } from "../src/sandbox/warm-pool.js";

const diskSizeOf = (requested: number, build: { diskSizeMB: number }) => requested || build.diskSizeMB || 0;
const snapshot = { vcpu: 2, memoryMB: 512 };
const ask = { vcpu: 2, memoryMB: 512, allowInternetAccess: true, diskSizeMB: 0 };

describe("warm pool claims", () => {
  test("a create that asks what the entries were booted with takes one", () => {
    assert.equal(fitsPool(ask, { diskSizeMB: 0 }, snapshot, diskSizeOf), true);
    assert.equal(fitsPool({ ...ask, diskSizeMB: 1024 }, { diskSizeMB: 1024 }, snapshot, diskSizeOf), true);
  });

  test("other CPU, memory, disk or no internet access boot their own; no snapshot, no pool", () => {
    assert.equal(fitsPool({ ...ask, vcpu: 1 }, { diskSizeMB: 0 }, snapshot, diskSizeOf), false);
    assert.equal(fitsPool({ ...ask, memoryMB: 1024 }, { diskSizeMB: 0 }, snapshot, diskSizeOf), false);
    assert.equal(fitsPool({ ...ask, diskSizeMB: 2048 }, { diskSizeMB: 1024 }, snapshot, diskSizeOf), false);
    assert.equal(
      fitsPool({ ...ask, allowInternetAccess: false }, { diskSizeMB: 0 }, snapshot, diskSizeOf),
      false,
    );
    assert.equal(fitsPool(ask, { diskSizeMB: 0 }, undefined, diskSizeOf), false);
  });
});
