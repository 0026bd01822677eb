/**
 * Orchestrator figures: create → envd /health answers (10 runs) beside a bare `runsc run` of a Node
 * HTTP server on the same rootfs, network and runsc; and memory per idle sandbox (PSS of its host
 * processes, and the host's used-memory delta over N idle sandboxes).
 */
import { readdir, readFile, writeFile } from "node:fs/promises";
import path from "node:path";
import {
  type CreateInput,
  createSandboxNetwork,
  destroySandboxNetwork,
  ensureBaseTemplate,
  ensureRunsc,
  mountRootfs,
  Runsc,
  removeSandboxDir,
  Slot,
  sandboxSpec,
  startOrchestrator,
} from "@moat/orchestrator";
import { createNoopLogger } from "@moat/shared";
import { makeDataDir, removeDataDir } from "../tests/integration/helpers/orchestrator.js";
import type { Figure } from "./report.js";
import { summarize } from "./stats.js";

const RUNS = 10;
const IDLE_SANDBOXES = Number(process.env.MOAT_BENCH_IDLE ?? 20);

async function waitForHTTP(url: string): Promise<void> {
  for (;;) {
    try {
      const res = await fetch(url, { signal: AbortSignal.timeout(1000) });
      if (res.status < 500) return;
    } catch {
      // not yet
    }
    await new Promise((r) => setTimeout(r, 5));
  }
}

/**
 * Start → serving of a bare runsc container running a Node HTTP server, with the same rootfs,
 * network and flags as a sandbox: the runtime's own floor, the baseline of the create figures.
 */
export async function bareRuntimeStarts(runs: number): Promise<number[]> {
  const dataDir = await makeDataDir();
  try {
    const logger = createNoopLogger();
    const install = await ensureRunsc({ dataDir, logger });
    const base = await ensureBaseTemplate({ dataDir, logger });
    const runsc = new Runsc({
      binary: install.path,
      stateDir: path.join(dataDir, "runsc"),
      platform: install.platform,
    });
    const out: number[] = [];
    for (let i = 0; i < runs; i++) out.push(await bareRunscStart(dataDir, runsc, base.rootfs, i));
    return out;
  } finally {
    await removeDataDir(dataDir);
  }
}

/** A bare runsc container running a Node HTTP server, with the same rootfs, network and flags. */
async function bareRunscStart(
  dataDir: string,
  runsc: Runsc,
  templateRootfs: string,
  i: number,
): Promise<number> {
  const slot = new Slot(16_000 + i);
  const dir = path.join(dataDir, "bare", String(i));
  const id = `moat-bench-bare-${i}`;
  await createSandboxNetwork(slot, { allowInternetAccess: false });
  try {
    const rootfs = await mountRootfs(templateRootfs, dir);
    const spec = sandboxSpec({
      sandboxID: id,
      containerID: id,
      rootfs: rootfs.merged,
      netnsPath: slot.guestNamespacePath,
      vcpu: 1,
      memoryMB: 512,
      pidsLimit: 1024,
      nodeBinary: process.execPath,
      appDir: path.resolve("."),
      envdPort: 49983,
    }) as { process: { args: string[] } };
    spec.process.args = [
      "/opt/moat/node",
      "-e",
      "require('http').createServer((q,s)=>{s.statusCode=204;s.end()}).listen(49983)",
    ];
    await writeFile(path.join(dir, "config.json"), JSON.stringify(spec));
    const started = performance.now();
    await runsc.run(id, dir, path.join(dir, "runsc.log"));
    await waitForHTTP(`http://${slot.hostAddress}:49983/`);
    return performance.now() - started;
  } finally {
    await runsc.destroy(id);
    await destroySandboxNetwork(slot);
    await removeSandboxDir(dir);
  }
}

/** Sum of the PSS of the host processes that belong to a runsc container. */
async function containerPSS(containerID: string): Promise<number> {
  let total = 0;
  for (const pid of await readdir("/proc")) {
    if (!/^\d+$/.test(pid)) continue;
    try {
      const cmdline = await readFile(`/proc/${pid}/cmdline`, "utf8");
      if (!cmdline.includes(containerID)) continue;
      const rollup = await readFile(`/proc/${pid}/smaps_rollup`, "utf8");
      total += Number(/^Pss:\s+(\d+) kB/m.exec(rollup)?.[1] ?? 0) * 1024;
    } catch {
      // exited
    }
  }
  return total;
}

/** An ordinary 1-vCPU, 512 MB sandbox of the base template. */
function benchSandbox(sandboxID: string): CreateInput {
  return {
    sandboxID,
    templateID: "base",
    teamID: "bench",
    vcpu: 1,
    memoryMB: 512,
    diskSizeMB: 0,
    envVars: {},
    metadata: {},
    envdAccessToken: "",
    allowInternetAccess: true,
    defaultUser: "",
    defaultWorkdir: "",
    endTime: new Date(Date.now() + 600_000),
  };
}

async function usedMemory(): Promise<number> {
  const info = await readFile("/proc/meminfo", "utf8");
  const kb = (key: string) => Number(new RegExp(`^${key}:\\s+(\\d+)`, "m").exec(info)?.[1] ?? 0) * 1024;
  return kb("MemTotal") - kb("MemAvailable");
}

export async function benchOrchestrator(): Promise<Figure[]> {
  const dataDir = await makeDataDir();
  const logger = createNoopLogger();
  const install = await ensureRunsc({ dataDir, logger });
  const base = await ensureBaseTemplate({ dataDir, logger });
  const orch = await startOrchestrator({
    dataDir,
    port: 0,
    host: "127.0.0.1",
    logger,
    runscBinary: install.path,
    platform: install.platform,
    templates: { rootfs: (id) => (id === "base" ? base.rootfs : undefined) },
  });
  const runsc = new Runsc({
    binary: install.path,
    stateDir: path.join(dataDir, "runsc"),
    platform: install.platform,
  });
  try {
    const create: number[] = [];
    const bare: number[] = [];
    for (let i = 0; i < RUNS; i++) {
      bare.push(await bareRunscStart(dataDir, runsc, base.rootfs, i));
      const started = performance.now();
      const sandbox = await orch.manager.create(benchSandbox(`bench${i}${Date.now().toString(36)}`));
      await waitForHTTP(`http://${sandbox.hostAddress}:49983/health`);
      create.push(performance.now() - started);
      await orch.manager.kill(sandbox.id);
    }

    // Idle memory: N sandboxes side by side.
    const before = await usedMemory();
    const idle = [];
    for (let i = 0; i < IDLE_SANDBOXES; i++) {
      idle.push(await orch.manager.create(benchSandbox(`idle${i}${Date.now().toString(36)}`)));
    }
    await new Promise((r) => setTimeout(r, 3000));
    const delta = ((await usedMemory()) - before) / IDLE_SANDBOXES / 1024 / 1024;
    const pss = await Promise.all(idle.map((s) => containerPSS(s.record.lifecycleID)));
    for (const s of idle) await orch.manager.kill(s.id);

    return [
      {
        name: "orchestrator create → envd /health answers",
        unit: "ms",
        value: summarize(create),
        baseline: {
          name: "bare runsc run of a Node HTTP server, same rootfs and network",
          value: summarize(bare),
        },
        target: { ratio: 1.3 },
      },
      {
        name: `memory per idle sandbox, PSS of its host processes (N=${IDLE_SANDBOXES})`,
        unit: "MB",
        value: summarize(pss.map((b) => b / 1024 / 1024)),
        target: { median: 25 },
      },
      {
        name: `memory per idle sandbox, host used-memory delta / N (N=${IDLE_SANDBOXES})`,
        unit: "MB",
        value: summarize([delta]),
        target: { median: 25 },
      },
    ];
  } finally {
    await orch.manager.killAll();
    await orch.close();
    await removeDataDir(dataDir);
  }
}
