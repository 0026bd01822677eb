/**
 * What publishing paused sandboxes to the shared artifact store (sandbox/relocation.ts) adds to a
 * pause: pause through the orchestrator's RPC of one sandbox holding 64 MB of files and a process,
 * on a node with `--artifacts` (a directory here) beside the same on a node without, in the same
 * run; plus the size of what is published, and one resume on a node that never held the sandbox
 * (fetched from the store) beside the local resumes.
 */
import { mkdtemp, readdir, rm, stat } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import {
  createSandbox,
  makeDataDir,
  type RunningOrchestrator,
  removeDataDir,
  sdkFor,
  startOrchestrator,
} from "../tests/integration/helpers/orchestrator.js";
import type { Figure } from "./report.js";
import { summarize } from "./stats.js";

const CYCLES = Number(process.env.MOAT_BENCH_RELOCATE_CYCLES ?? 10);
const endIn = (ms: number) => timestampFromDate(new Date(Date.now() + ms));

interface Run {
  pauseMs: number[];
  resumeMs: number[];
  /** Bytes in the store after the last pause. */
  publishedBytes: number;
}

async function storeBytes(store: string): Promise<number> {
  let total = 0;
  for (const e of await readdir(store, { recursive: true, withFileTypes: true }).catch(() => [])) {
    if (e.isFile()) total += (await stat(path.join(e.parentPath, e.name))).size;
  }
  return total;
}

/** `CYCLES` pauses and resumes of one busy sandbox; the last pause is left for `after`. */
async function cycles(
  node: RunningOrchestrator,
  store: string | undefined,
): Promise<Run & { sandboxID: string; generation: number }> {
  const info = await createSandbox(node, { timeoutMs: 3_600_000 });
  const id = info.config!.sandboxId;
  const sbx = sdkFor(info);
  // Files on its disk and a process with memory of its own: what a real paused sandbox holds.
  await sbx.commands.run("head -c 64M /dev/urandom > /home/user/data.bin");
  await sbx.commands.run("python3 -c 'import time; x = bytearray(32 << 20); time.sleep(86400)'", {
    background: true,
    timeoutMs: 0,
  });
  const pauseMs: number[] = [];
  const resumeMs: number[] = [];
  let generation = 0;
  for (let i = 0; i <= CYCLES; i++) {
    let t = performance.now();
    generation = (await node.client.pause({ sandboxId: id })).sandbox!.artifactGeneration;
    pauseMs.push(performance.now() - t);
    if (i === CYCLES) break;
    t = performance.now();
    await node.client.resume({ sandboxId: id, endTime: endIn(3_600_000) });
    resumeMs.push(performance.now() - t);
  }
  return {
    pauseMs,
    resumeMs,
    publishedBytes: store ? await storeBytes(store) : 0,
    sandboxID: id,
    generation,
  };
}

export async function benchRelocate(): Promise<Figure[]> {
  const store = await mkdtemp(path.join(tmpdir(), "moat-bench-artifacts-"));
  const dirs: string[] = [];
  const node = async (env: Record<string, string>) => {
    const dir = await makeDataDir();
    dirs.push(dir);
    return startOrchestrator(dir, { env });
  };
  try {
    const plain = await node({});
    let without: Run;
    try {
      const run = await cycles(plain, undefined);
      await plain.client.delete({ sandboxId: run.sandboxID });
      without = run;
    } finally {
      await plain.stop();
    }
    const first = await node({ MOAT_ARTIFACTS: store });
    let withStore: Run & { sandboxID: string; generation: number };
    try {
      withStore = await cycles(first, store);
    } finally {
      await first.stop();
    }
    // A node that never held it resumes the last pause from the store.
    const second = await node({ MOAT_ARTIFACTS: store });
    let elsewhereMs: number;
    try {
      const t = performance.now();
      await second.client.resume({
        sandboxId: withStore.sandboxID,
        endTime: endIn(60_000),
        artifactGeneration: withStore.generation,
      });
      elsewhereMs = performance.now() - t;
      await second.client.delete({ sandboxId: withStore.sandboxID });
    } finally {
      await second.stop();
    }
    const publishedMB = withStore.publishedBytes / 1e6;
    return [
      {
        name: "relocate: pause publishing to the artifact store (directory)",
        unit: "ms",
        value: summarize(withStore.pauseMs),
        baseline: { name: "pause without an artifact store", value: summarize(without.pauseMs) },
        notes: [
          `published per pause: ${publishedMB.toFixed(1)} MB (memory image and disk, zstd), for 64 MB of random files and a 32 MB process`,
          `resume on a node that never held it (fetch, unpack, restore): ${elsewhereMs.toFixed(0)} ms; local resume median ${summarize(withStore.resumeMs).median.toFixed(0)} ms`,
          "2 shared cores: the compression competes with the sandbox and everything else on the host",
        ],
      },
    ];
  } finally {
    // The first node of the store run kept its copy of the last pause: it goes with its directory.
    for (const dir of dirs) await removeDataDir(dir).catch(() => undefined);
    await rm(store, { recursive: true, force: true });
  }
}
