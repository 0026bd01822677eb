import assert from "node:assert/strict";
import { mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { test } from "node:test";
import { BACKGROUND_CPU_SHARES, raiseCpuPriority } from "../src/runtime/cpu-priority.js";
import { sandboxSpec } from "../src/runtime/oci-spec.js";

const spec = (cpuShares?: number) =>
  sandboxSpec({
    sandboxID: "s",
    containerID: "moat-s-1",
    rootfs: "/r",
    netnsPath: "/n",
    vcpu: 2,
    memoryMB: 512,
    pidsLimit: 100,
    nodeBinary: "/node",
    envdDir: "/envd",
    envdPort: 49983,
    cpuShares,
  }) as { linux: { resources: { cpu: Record<string, number> } } };

test("a pool entry's spec asks for a low CPU share; others keep runsc's default", () => {
  assert.equal(spec(BACKGROUND_CPU_SHARES).linux.resources.cpu.shares, BACKGROUND_CPU_SHARES);
  assert.equal(spec().linux.resources.cpu.shares, undefined);
  assert.equal(spec().linux.resources.cpu.quota, 2 * spec().linux.resources.cpu.period!);
});

test("a claim raises the container's share on cgroup v1 or v2, and says when there is no cgroup", async () => {
  const root = await mkdtemp(path.join(tmpdir(), "moat-cgroup-"));
  try {
    const v1 = path.join(root, "cpu/moat/moat-a-1");
    await mkdir(v1, { recursive: true });
    await writeFile(path.join(v1, "cpu.shares"), "16");
    assert.equal(await raiseCpuPriority("moat-a-1", root), true);
    assert.equal(await readFile(path.join(v1, "cpu.shares"), "utf8"), "1024");

    const v2 = path.join(root, "moat/moat-b-1");
    await mkdir(v2, { recursive: true });
    await writeFile(path.join(v2, "cpu.weight"), "1");
    assert.equal(await raiseCpuPriority("moat-b-1", root), true);
    assert.equal(await readFile(path.join(v2, "cpu.weight"), "utf8"), "100");

    assert.equal(await raiseCpuPriority("moat-none-1", root), false);
  } finally {
    await rm(root, { recursive: true, force: true });
  }
});
