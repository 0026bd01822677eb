/**
 * Volume figures with the unmodified e2b SDK against `moat up`: a 10 MB file written and read back
 * through the SDK's files API (envd) at a volume's mount path, beside the same on the sandbox's
 * own disk in the same sandbox; the same 10 MB through the SDK's `Volume` (the API's content
 * routes, streamed to the node); and create → first command of a sandbox that mounts a volume
 * (a cold boot: no snapshot or pool entry has its mount) beside one that mounts none (the
 * template snapshot), in the same run.
 */
import { randomBytes } from "node:crypto";
import { Sandbox, Volume } from "e2b";
import { withMoat } from "./platform.js";
import type { Figure } from "./report.js";
import { summarize } from "./stats.js";

const FILE_BYTES = 10 * 1024 * 1024;
const ROUNDS = 10;
const CREATES = 8;

async function timed(fn: () => Promise<unknown>): Promise<number> {
  const started = performance.now();
  await fn();
  return performance.now() - started;
}

/** Writes then reads back `data` at `file`, checking what came back; the round's time. */
async function writeRead(sbx: Sandbox, file: string, data: Buffer): Promise<number> {
  return timed(async () => {
    await sbx.files.write(file, new Uint8Array(data).buffer);
    const back = await sbx.files.read(file, { format: "bytes" });
    if (!Buffer.from(back).equals(data)) throw new Error(`${file} read back differs from what was written`);
  });
}

export async function benchVolumes(): Promise<Figure[]> {
  // Pool off: both kinds of create take the same path up to the boot (snapshot or cold).
  return withMoat({ MOAT_POOL_SIZE: "0", MOAT_TEAM_VOLUME_SIZE_MB: "1024" }, async () => {
    const vol = await Volume.create(`bench-${randomBytes(4).toString("hex")}`);
    try {
      const data = randomBytes(FILE_BYTES);
      const sbx = await Sandbox.create("base", { volumeMounts: { "/mnt/vol": vol }, timeoutMs: 600_000 });
      const onVolume: number[] = [];
      const onDisk: number[] = [];
      const throughAPI: number[] = [];
      try {
        // One unmeasured round each: first writes allocate, first reads warm the caches.
        await writeRead(sbx, "/mnt/vol/warm", data);
        await writeRead(sbx, "/home/user/warm", data);
        for (let i = 0; i < ROUNDS; i++) {
          onVolume.push(await writeRead(sbx, `/mnt/vol/f${i % 2}`, data));
          onDisk.push(await writeRead(sbx, `/home/user/f${i % 2}`, data));
          throughAPI.push(
            await timed(async () => {
              await vol.writeFile(`/api${i % 2}`, new Uint8Array(data).buffer);
              const back = await vol.readFile(`/api${i % 2}`, { format: "bytes" });
              if (!Buffer.from(back).equals(data)) throw new Error("the volume read back differs");
            }),
          );
        }
      } finally {
        await sbx.kill();
      }

      const withVolume: number[] = [];
      const without: number[] = [];
      for (let i = 0; i < CREATES; i++) {
        for (const [samples, opts] of [
          [withVolume, { volumeMounts: { "/mnt/vol": vol } }],
          [without, {}],
        ] as const) {
          let created: Sandbox | undefined;
          samples.push(
            await timed(async () => {
              created = await Sandbox.create("base", opts);
              await created.commands.run("true");
            }),
          );
          await created?.kill();
        }
      }
      const mb = FILE_BYTES / 2 ** 20;
      return [
        {
          name: `${mb} MB write + read through the SDK's files API on a volume (at its mount path)`,
          unit: "ms",
          value: summarize(onVolume),
          baseline: { name: "the same on the sandbox's own disk, same sandbox", value: summarize(onDisk) },
        },
        {
          name: `${mb} MB write + read through the SDK's Volume (API content routes → node)`,
          unit: "ms",
          value: summarize(throughAPI),
          baseline: { name: "through the files API on the sandbox's own disk", value: summarize(onDisk) },
        },
        {
          name: "create → first command of a sandbox mounting a volume (cold boot, pool off)",
          unit: "ms",
          value: summarize(withVolume),
          baseline: {
            name: "a sandbox mounting none (template snapshot), same run",
            value: summarize(without),
          },
        },
      ];
    } finally {
      await Volume.destroy(vol.volumeId);
    }
  });
}
