/**
 * envd's idle memory with the node flags and environment sandboxes start it with
 * (runtime/oci-spec.ts) beside plain `node`, both run on the host and warmed with the calls a
 * template snapshot is warmed with: the anonymous memory a snapshot saves for every sandbox. And
 * what the flags cost: `commands.run("true")` and a 10 MB write+read, interleaved.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { readFile, rm } from "node:fs/promises";
import { ENVD_ENV, ENVD_NODE_FLAGS, warmEnvd } from "@moat/orchestrator";
import { Sandbox } from "e2b";
import { makeUserDir } from "../tests/integration/helpers/envd.js";
import { freePort } from "../tests/integration/helpers/orchestrator.js";
import type { Figure } from "./report.js";
import { summarize } from "./stats.js";

const ENVD = "packages/envd/dist/sandbox/envd.mjs";

interface Variant {
  child: ChildProcess;
  sbx: Sandbox;
  cmd: number[];
  files: number[];
}

async function start(flags: string[], env: string[]): Promise<Variant & { port: number }> {
  const port = await freePort();
  const child = spawn(process.execPath, [...flags, ENVD, "--port", String(port)], {
    env: { ...process.env, ...Object.fromEntries(env.map((e) => e.split("="))), MOAT_LOG_LEVEL: "info" },
    stdio: "ignore",
  });
  const url = `http://127.0.0.1:${port}`;
  for (let i = 0; ; i++) {
    const ok = await fetch(`${url}/health`).then(
      (r) => r.status === 204,
      () => false,
    );
    if (ok) break;
    if (i > 200 || child.exitCode !== null) throw new Error(`envd ${flags.join(" ")} did not start`);
    await new Promise((r) => setTimeout(r, 50));
  }
  const sbx = new Sandbox({
    sandboxId: "local",
    envdVersion: "0.6.13",
    sandboxUrl: url,
    apiKey: "e2b_0000000000000000000000000000000000000000",
  } as ConstructorParameters<typeof Sandbox>[0]);
  return { child, sbx, port, cmd: [], files: [] };
}

async function anonMB(pid: number): Promise<number> {
  const status = await readFile(`/proc/${pid}/status`, "utf8");
  return Number(/RssAnon:\s+(\d+) kB/.exec(status)?.[1] ?? NaN) / 1024;
}

export async function envdMemory(): Promise<Figure[]> {
  const dir = makeUserDir("/tmp/moat-bench-envd-mem-");
  const variants: Array<Variant & { port: number }> = [];
  try {
    // Memory: three of each, side by side.
    const memory = { plain: [] as number[], lean: [] as number[] };
    for (let i = 0; i < 3; i++) {
      variants.push(await start([], []), await start(ENVD_NODE_FLAGS, ENVD_ENV));
    }
    // The calls a template snapshot is warmed with, right before its checkpoint.
    for (const v of variants) await warmEnvd("127.0.0.1", v.port);
    await new Promise((r) => setTimeout(r, 3000));
    for (const [i, v] of variants.entries()) {
      (i % 2 === 0 ? memory.plain : memory.lean).push(await anonMB(v.child.pid!));
    }
    const [plain, lean] = [variants[0]!, variants[1]!];
    const data = new Uint8Array(randomBytes(10 * 1024 * 1024)).buffer;
    for (let round = -1; round < 6; round++) {
      for (const v of [plain, lean]) {
        for (let i = 0; i < 20; i++) {
          const t = performance.now();
          await v.sbx.commands.run("true");
          if (round >= 0) v.cmd.push(performance.now() - t);
        }
        for (let i = 0; i < 2; i++) {
          const t = performance.now();
          await v.sbx.files.write(`${dir}/io.bin`, data);
          await v.sbx.files.read(`${dir}/io.bin`, { format: "bytes" });
          if (round >= 0) v.files.push(performance.now() - t);
        }
      }
    }
    const flags = [...ENVD_NODE_FLAGS, ...ENVD_ENV].join(" ");
    return [
      {
        name: `envd idle anonymous memory on the host, warmed as for a template snapshot, with ${flags}`,
        unit: "MB",
        value: summarize(memory.lean),
        baseline: { name: "plain node", value: summarize(memory.plain) },
      },
      {
        name: 'envd commands.run("true") round trip on the host with the sandbox flags',
        unit: "ms",
        value: summarize(lean.cmd),
        baseline: { name: "plain node", value: summarize(plain.cmd) },
      },
      {
        name: "envd files write+read 10 MB on the host with the sandbox flags",
        unit: "ms",
        value: summarize(lean.files),
        baseline: { name: "plain node", value: summarize(plain.files) },
      },
    ];
  } finally {
    for (const v of variants) v.child.kill();
    await rm(dir, { recursive: true, force: true });
  }
}
