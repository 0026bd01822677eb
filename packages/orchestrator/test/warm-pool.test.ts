import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { createNoopLogger } from "@moat/shared";
import type { CreateInput } from "../src/sandbox/create-input.js";
import type { SandboxFactory } from "../src/sandbox/factory.js";
import type { Sandbox } from "../src/sandbox/sandbox.js";
import type { TemplateSnapshots } from "../src/sandbox/template-snapshots.js";
import { fitsPool, WarmPool } from "../src/sandbox/warm-pool.js";
import type { TemplateBuild, TemplateResolver } from "../src/template/store.js";

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

/** A pool on a runtime that restores in no time: entries are records, "released" when let go. */
function fakePool(options: { size: number; maxSize: number; idleMs: number }) {
  const released: string[] = [];
  let next = 0;
  let busy = false;
  const factory = {
    instance: async () => {
      const id = `pool-${next++}`;
      return { id, record: { sandboxID: id } } as unknown as Sandbox;
    },
    boot: async () => undefined,
    release: async (entry: Sandbox) => {
      released.push(entry.id);
    },
  } as unknown as SandboxFactory;
  const pool = new WarmPool({
    ...options,
    factory,
    snapshots: { get: () => ({ templateID: "base", ...snapshot }) } as unknown as TemplateSnapshots,
    templates: { resolve: () => build } as unknown as TemplateResolver,
    logger: createNoopLogger(),
    busy: () => busy,
    diskSizeOf,
    refillDelayMs: 0,
    concurrency: 2,
  });
  return {
    pool,
    released,
    setBusy: (b: boolean) => {
      busy = b;
    },
  };
}

const build = { templateID: "base", key: "base", diskSizeMB: 0 } as unknown as TemplateBuild;
const create = { ...ask, volumeMounts: [] } as unknown as CreateInput;

async function until(what: string, check: () => boolean, timeoutMs = 2000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

describe("warm pool size under bursts", () => {
  test("grows to the most creates at once (up to maxSize), refills after them, shrinks back when idle", async () => {
    const { pool, released, setBusy } = fakePool({ size: 2, maxSize: 5, idleMs: 300 });
    pool.fill("base");
    await until("the first fill", () => pool.count("base") === 2);
    // A burst of 7 creates: the pool wants 5 (its bound), not 7; none are restored while they run.
    setBusy(true);
    const ends = Array.from({ length: 7 }, () => pool.demand(create, build));
    assert.ok(pool.claim(create, build));
    assert.ok(pool.claim(create, build));
    assert.equal(pool.sizeOf("base"), 5);
    await new Promise((r) => setTimeout(r, 50));
    assert.equal(pool.count("base"), 0, "no refill while creates are under way");
    for (const end of ends) end();
    setBusy(false);
    await until("the grown refill", () => pool.count("base") === 5);
    assert.equal(pool.target(), 5);
    // Idle: back to its size, the entries beyond it released.
    await until("the shrink", () => pool.count("base") === 2, 3000);
    assert.equal(pool.sizeOf("base"), 2);
    assert.equal(released.length, 3);
    await pool.close();
  });

  test("a burst that lasts longer than idleMs: idle time counts from its end", async () => {
    const { pool } = fakePool({ size: 1, maxSize: 4, idleMs: 150 });
    const ends = Array.from({ length: 4 }, () => pool.demand(create, build));
    await new Promise((r) => setTimeout(r, 400));
    assert.equal(pool.sizeOf("base"), 4, "no shrink while the burst is under way");
    for (const end of ends) end();
    await new Promise((r) => setTimeout(r, 50));
    assert.equal(pool.sizeOf("base"), 4, "nor right after it");
    await until("the shrink", () => pool.sizeOf("base") === 1);
    await pool.close();
  });

  test("growth is one budget for the node: a burst on another template cannot add maxSize more", async () => {
    const { pool } = fakePool({ size: 1, maxSize: 4, idleMs: 60_000 });
    const other = { ...build, templateID: "other", key: "other" } as unknown as TemplateBuild;
    const first = Array.from({ length: 4 }, () => pool.demand(create, build));
    assert.equal(pool.sizeOf("base"), 4);
    const second = Array.from({ length: 4 }, () => pool.demand(create, other));
    assert.equal(pool.sizeOf("other"), 1, "the 3 entries of growth are all taken by base");
    for (const end of [...first, ...second]) end();
    await pool.close();
  });

  test("the growth budget left is shared: a later burst grows only into what is left", async () => {
    const { pool } = fakePool({ size: 1, maxSize: 6, idleMs: 60_000 });
    const other = { ...build, templateID: "other", key: "other" } as unknown as TemplateBuild;
    const first = Array.from({ length: 3 }, () => pool.demand(create, build));
    const second = Array.from({ length: 8 }, () => pool.demand(create, other));
    assert.equal(pool.sizeOf("base"), 3);
    assert.equal(pool.sizeOf("other"), 4, "1 + the 3 of growth base left");
    for (const end of [...first, ...second]) end();
    await pool.close();
  });

  test("creates no more than the size at once leave it as it is", async () => {
    const { pool } = fakePool({ size: 2, maxSize: 8, idleMs: 300 });
    const ends = [pool.demand(create, build), pool.demand(create, build)];
    assert.equal(pool.sizeOf("base"), 2);
    for (const end of ends) end();
    // A create that cannot take an entry (no internet) asks nothing of the pool.
    const other = pool.demand({ ...create, allowInternetAccess: false }, build);
    other();
    assert.equal(pool.sizeOf("base"), 2);
    await pool.close();
  });
});
