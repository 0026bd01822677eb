/**
 * File I/O through the platform: a 10 MB `files.write` + `files.read` with the unmodified SDK into
 * a sandbox of `moat up`, through the client proxy, beside the same envd build run as a plain
 * process on the host on loopback, measured interleaved in the same run. Where the time goes: the
 * same calls straight to the sandbox's envd (no proxy), and the same bytes written and read by a
 * process inside the sandbox (envd and HTTP left out: gVisor and its gofer alone).
 */
import { randomBytes } from "node:crypto";
import { rm } from "node:fs/promises";
import http from "node:http";
import type { AddressInfo } from "node:net";
import path from "node:path";
import { Sandbox } from "e2b";
import { makeUserDir, startEnvd } from "../tests/integration/helpers/envd.js";
import { straightTo, withMoat } from "./platform.js";
import type { Figure } from "./report.js";
import { type Summary, summarize } from "./stats.js";

const SIZE = 10 * 1024 * 1024;
const ROUNDS = 5;
const PER_ROUND = 4;

interface Timed {
  write: number[];
  read: number[];
  total: number[];
}

/** `files.write` then `files.read` of `data` at `file`, `runs` times after one unmeasured. */
async function writeRead(
  sbx: Sandbox,
  file: string,
  data: ArrayBuffer,
  runs: number,
  into: Timed,
): Promise<void> {
  for (let i = -1; i < runs; i++) {
    const t0 = performance.now();
    await sbx.files.write(file, data);
    const t1 = performance.now();
    const back = await sbx.files.read(file, { format: "bytes" });
    const t2 = performance.now();
    if (back.length !== data.byteLength) throw new Error(`read ${back.length} bytes of ${data.byteLength}`);
    if (i < 0) continue;
    into.write.push(t1 - t0);
    into.read.push(t2 - t1);
    into.total.push(t2 - t0);
  }
}

const empty = (): Timed => ({ write: [], read: [], total: [] });
const med = (xs: number[]) => summarize(xs).median.toFixed(0);
const split = (t: Timed) => `write ${med(t.write)} ms, read ${med(t.read)} ms`;

/**
 * Milliseconds a process inside the sandbox takes to write 10 MB to a file (with fsync) and read it
 * back, from the sandbox's own clock: gVisor's file path (gofer, host overlay) without envd.
 */
async function inside(sbx: Sandbox, file: string): Promise<{ write: number; read: number }> {
  const res = await sbx.commands.run(
    `a=$(date +%s%N); head -c ${SIZE} /dev/zero > ${file}; sync ${file}; b=$(date +%s%N); ` +
      `cat ${file} > /dev/null; c=$(date +%s%N); echo $(( (b-a)/1000 )) $(( (c-b)/1000 ))`,
  );
  const [w, r] = res.stdout.trim().split(" ").map(Number);
  return { write: w! / 1000, read: r! / 1000 };
}

/**
 * An HTTP server on loopback that takes uploads and answers downloads from memory, as envd's
 * `/files` does on the wire: what the SDK's own work costs, the floor under every other figure.
 */
async function memorySink(data: ArrayBuffer): Promise<{ url: string; close: () => void }> {
  const bytes = Buffer.from(data);
  const server = http.createServer((req, res) => {
    if (req.method === "GET") {
      res.writeHead(200, { "content-type": "application/octet-stream", "content-length": bytes.length });
      res.end(bytes);
      return;
    }
    req.resume();
    req.on("end", () => {
      res.writeHead(200, { "content-type": "application/json" });
      res.end(JSON.stringify([{ name: "io.bin", type: "file", path: "/io.bin" }]));
    });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    close: () => server.close(),
  };
}

export async function benchIO(): Promise<Figure[]> {
  const data = new Uint8Array(randomBytes(SIZE)).buffer;
  const dir = makeUserDir("/tmp/moat-bench-io-");
  const sink = await memorySink(data);
  try {
    return await withMoat({ MOAT_POOL_SIZE: "0" }, async (moat) => {
      const sbx = await Sandbox.create("base");
      try {
        const direct = await straightTo(moat, sbx.sandboxId);
        // envd as a plain host process, as in production (info logs).
        const envd = await startEnvd([], "info");
        try {
          // Not the SDK's debug mode: with moat's variables set it would go through moat's proxy.
          const host = new Sandbox({
            sandboxId: "local",
            envdVersion: "0.6.13",
            sandboxUrl: envd.url,
            apiKey: moat.env.E2B_API_KEY,
          });
          delete process.env.E2B_DEBUG;
          const floor = new Sandbox({
            sandboxId: "sink",
            envdVersion: "0.6.13",
            sandboxUrl: sink.url,
            apiKey: moat.env.E2B_API_KEY,
          });
          const sdkAlone = empty();
          const proxied = empty();
          const straight = empty();
          const onHost = empty();
          const gofer = { write: [] as number[], read: [] as number[] };
          // Interleaved, so that the machine's noise hits all of them alike.
          for (let round = 0; round < ROUNDS; round++) {
            await writeRead(floor, "/io.bin", data, PER_ROUND, sdkAlone);
            await writeRead(host, path.join(dir, "io.bin"), data, PER_ROUND, onHost);
            await writeRead(sbx, "/home/user/io.bin", data, PER_ROUND, proxied);
            await writeRead(direct, "/home/user/io-direct.bin", data, PER_ROUND, straight);
            const g = await inside(sbx, "/home/user/io-inside.bin");
            gofer.write.push(g.write);
            gofer.read.push(g.read);
          }
          const baseline = {
            name: "the same envd build on the host, loopback",
            value: summarize(onHost.total),
          };
          const fig = (name: string, value: Summary, notes: string[], target?: Figure["target"]): Figure => ({
            name,
            unit: "ms",
            value,
            baseline,
            target,
            notes,
          });
          return [
            fig(
              "files.write + files.read 10 MB through the client proxy",
              summarize(proxied.total),
              [
                `through the proxy: ${split(proxied)}`,
                `straight to the sandbox's envd (no proxy): total ${med(straight.total)} ms, ${split(straight)}`,
                `envd on the host: ${split(onHost)}`,
                `the SDK alone (a server answering from memory on loopback): total ${med(sdkAlone.total)} ms, ${split(sdkAlone)}`,
                `a process inside the sandbox, 10 MB to a file with sync and back (no envd): write ${med(gofer.write)} ms, read ${med(gofer.read)} ms`,
              ],
              { median: 150 },
            ),
            fig(
              "files.write + files.read 10 MB straight to the sandbox's envd (no proxy)",
              summarize(straight.total),
              [],
            ),
          ];
        } finally {
          delete process.env.E2B_DEBUG;
          await envd.stop();
        }
      } finally {
        await sbx.kill().catch(() => undefined);
      }
    });
  } finally {
    sink.close();
    await rm(dir, { recursive: true, force: true });
  }
}
