/**
 * envd figures: `commands.run("true")` round trip through the SDK beside a plain child_process
 * spawn of `true`, and a 10 MB file write+read through the SDK beside `fs` on the same disk.
 */
import { spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { debugSandbox, startEnvd } from "../tests/integration/helpers/envd.js";
import type { Figure } from "./report.js";
import { sample, summarize } from "./stats.js";

function spawnTrue(): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = spawn("true", { stdio: "ignore" });
    child.once("error", reject);
    child.once("exit", () => resolve());
  });
}

export async function benchEnvd(): Promise<Figure[]> {
  // Per-request debug logs would be measured too: run envd as in production.
  const envd = await startEnvd([], "info");
  const dir = await mkdtemp(path.join(tmpdir(), "moat-bench-"));
  try {
    const sbx = await debugSandbox();
    const runs = 200;
    // Interleave the two so that machine noise hits both alike.
    const rpc: number[] = [];
    const plain: number[] = [];
    for (let i = 0; i < 5; i++) {
      rpc.push(...(await sample(runs / 5, () => sbx.commands.run("true"))));
      plain.push(...(await sample(runs / 5, spawnTrue)));
    }

    const data = randomBytes(10 * 1024 * 1024);
    const sdkFile = path.join(dir, "sdk.bin");
    const fsFile = path.join(dir, "fs.bin");
    const files: number[] = [];
    const fsBaseline: number[] = [];
    for (let i = 0; i < 4; i++) {
      files.push(
        ...(await sample(5, async () => {
          await sbx.files.write(sdkFile, data);
          const back = await sbx.files.read(sdkFile, { format: "bytes" });
          if (back.length !== data.length) throw new Error("short read");
        })),
      );
      fsBaseline.push(
        ...(await sample(5, async () => {
          await writeFile(fsFile, data);
          await readFile(fsFile);
        })),
      );
    }

    return [
      {
        name: 'envd commands.run("true") round trip',
        unit: "ms",
        value: summarize(rpc),
        baseline: { name: "child_process spawn of true", value: summarize(plain) },
        target: { median: 15, ratio: 3 },
      },
      {
        name: "envd files write+read 10 MB",
        unit: "ms",
        value: summarize(files),
        baseline: { name: "fs writeFile+readFile on the same disk", value: summarize(fsBaseline) },
        target: { median: 150 },
      },
    ];
  } finally {
    await envd.stop();
    await rm(dir, { recursive: true, force: true });
  }
}
