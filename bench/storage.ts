/**
 * What per-sandbox disks (storage/disk.ts) cost: create → first command (TTI) booted cold, restored
 * from the template snapshot and claimed from the warm pool, and the host memory of idle
 * sandboxes, each with disks (the default) beside the same figure with MOAT_DISK_SIZE_MB=0 (no
 * disk: the writable layer directly in the data directory), measured in the same run; plus the
 * bare cost of one disk (make the image, mount it) and the kernel memory a mounted disk holds.
 */
import { readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { mountDisk, unmountDisk } from "@moat/orchestrator";
import { Sandbox } from "e2b";
import { kindNote } from "./phases.js";
import { poolFull, type Sequential, sequentialTTI, withMoat } from "./platform.js";
import type { Figure } from "./report.js";
import { summarize } from "./stats.js";

const IDLE_SANDBOXES = 20;
const BARE_DISKS = 40;
const DEFAULT_DISK_MB = 10 * 1024;

interface ModeRun {
  cold: Sequential;
  snapshot: Sequential;
  pool: Sequential;
  /** Host memory per idle sandbox, in MB (MemTotal − MemAvailable, delta / N). */
  idleMB: number;
}

/** Host memory in use (MemTotal − MemAvailable) and the kernel's share (Slab, Buffers), in bytes. */
async function hostMemory(): Promise<{ used: number; kernel: number }> {
  const info = new Map(
    (await readFile("/proc/meminfo", "utf8"))
      .split("\n")
      .map((l) => /^(\w+):\s+(\d+)/.exec(l))
      .filter((m): m is RegExpExecArray => m !== null)
      .map((m) => [m[1]!, Number(m[2]) * 1024] as const),
  );
  const get = (k: string) => info.get(k) ?? 0;
  return {
    used: get("MemTotal") - get("MemAvailable"),
    kernel: get("Slab") + get("Buffers") + get("KernelStack"),
  };
}

const settle = () => new Promise((r) => setTimeout(r, 5000));

async function runMode(env: Record<string, string>): Promise<ModeRun> {
  const cold = await withMoat({ ...env, MOAT_TEMPLATE_SNAPSHOTS: "off" }, (moat) => sequentialTTI(moat));
  const { snapshot, idleMB } = await withMoat({ ...env, MOAT_POOL_SIZE: "0" }, async (moat) => {
    const snapshot = await sequentialTTI(moat);
    await settle();
    const before = await hostMemory();
    const idle: Sandbox[] = [];
    for (let i = 0; i < IDLE_SANDBOXES; i++) idle.push(await Sandbox.create("base"));
    await settle();
    const after = await hostMemory();
    await Promise.all(idle.map((s) => s.kill()));
    return { snapshot, idleMB: (after.used - before.used) / IDLE_SANDBOXES / 1e6 };
  });
  // Debug: every refill says "warm pool full" (at info only the first does).
  const pool = await withMoat({ ...env, MOAT_POOL_SIZE: "2", MOAT_LOG_LEVEL: "debug" }, async (moat) => {
    let fills = 1;
    return sequentialTTI(moat, async () => {
      await poolFull(moat, fills);
      fills++;
    });
  });
  return { cold, snapshot, pool, idleMB };
}

/** Making and mounting `BARE_DISKS` disks of the default size, and the memory they hold mounted. */
async function bareDisks(): Promise<{
  mountMs: number[];
  remountMs: number[];
  kernelKB: number;
  usedKB: number;
}> {
  const dirs = Array.from({ length: BARE_DISKS }, (_, i) =>
    path.join(tmpdir(), `moat-bench-disk-${process.pid}-${i}`),
  );
  const mountMs: number[] = [];
  const remountMs: number[] = [];
  try {
    for (const dir of dirs) {
      const started = performance.now();
      await mountDisk(dir, DEFAULT_DISK_MB);
      mountMs.push(performance.now() - started);
      await unmountDisk(dir);
    }
    await settle();
    const before = await hostMemory();
    for (const dir of dirs) {
      const started = performance.now();
      await mountDisk(dir, DEFAULT_DISK_MB);
      remountMs.push(performance.now() - started);
    }
    await settle();
    const after = await hostMemory();
    return {
      mountMs,
      remountMs,
      kernelKB: (after.kernel - before.kernel) / BARE_DISKS / 1024,
      usedKB: (after.used - before.used) / BARE_DISKS / 1024,
    };
  } finally {
    for (const dir of dirs) {
      await unmountDisk(dir).catch(() => undefined);
      await rm(dir, { recursive: true, force: true });
    }
  }
}

export async function benchStorage(): Promise<Figure[]> {
  const bare = await bareDisks();
  const off = await runMode({ MOAT_DISK_SIZE_MB: "0" });
  const on = await runMode({});
  const baselineOf = (run: Sequential) => ({
    name: "same with MOAT_DISK_SIZE_MB=0 (no disk)",
    value: summarize(run.samples),
  });
  const tti = (what: string, pick: (r: ModeRun) => Sequential): Figure => ({
    name: `TTI with a ${DEFAULT_DISK_MB} MiB disk per sandbox: create → first commands.run, ${what}`,
    unit: "ms",
    value: summarize(pick(on).samples),
    baseline: baselineOf(pick(off)),
    notes: [pick(on).phases, kindNote(pick(on).kinds), `baseline: ${pick(off).phases}`].filter(
      (l): l is string => !!l,
    ),
  });
  const one = (x: number) => ({ n: 1, median: x, p99: x, min: x, max: x });
  return [
    {
      name: `bare disk: make a ${DEFAULT_DISK_MB} MiB image (sparse, mkfs.ext4) and mount it loop,nosuid,nodev`,
      unit: "ms",
      value: summarize(bare.mountMs),
      baseline: { name: "mount of an existing image (a resume)", value: summarize(bare.remountMs) },
      notes: [
        `kernel memory per mounted idle disk (Slab + Buffers + KernelStack delta / ${BARE_DISKS}): ${bare.kernelKB.toFixed(0)} KiB; host used-memory delta / ${BARE_DISKS}: ${bare.usedKB.toFixed(0)} KiB`,
      ],
    },
    tti("cold boot (MOAT_TEMPLATE_SNAPSHOTS=off)", (r) => r.cold),
    tti("from the template snapshot (pool off)", (r) => r.snapshot),
    tti("claimed from the warm pool (size 2, full before each create)", (r) => r.pool),
    {
      name: `host memory per idle sandbox (${IDLE_SANDBOXES} sandboxes, used-memory delta / N) with disks`,
      unit: "MB",
      value: one(on.idleMB),
      baseline: { name: "same with MOAT_DISK_SIZE_MB=0", value: one(off.idleMB) },
      notes: ["host-wide: other processes on the machine add noise of a few MB per sandbox"],
    },
  ];
}
