/**
 * Shared artifacts: a create of a template build the node does not have (fetched from shared
 * storage: its manifest, its layer, its published snapshot, then restored) beside a create of the
 * same build once cached on the node, in the same run, on one orchestrator with a directory store.
 * Each fetched sample is a copy of the build under a new id (the layer removed from the node
 * between samples), so every one downloads and unpacks everything a fresh node would.
 */
import { mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { createClient } from "@connectrpc/connect";
import { DirectoryArtifactStore } from "@moat/orchestrator";
import { TemplateService } from "@moat/shared/gen/orchestrator";
import {
  createSandbox,
  makeDataDir,
  nodeTransport,
  type RunningOrchestrator,
  removeDataDir,
  startOrchestrator,
} from "../tests/integration/helpers/orchestrator.js";
import type { Figure } from "./report.js";
import { summarize } from "./stats.js";

const SAMPLES = 5;

export async function benchArtifacts(): Promise<Figure[]> {
  const work = await mkdtemp(path.join(tmpdir(), "moat-bench-artifacts-"));
  const sharedDir = path.join(work, "shared");
  await mkdir(sharedDir);
  const store = new DirectoryArtifactStore(sharedDir);
  const env = { MOAT_ARTIFACTS: sharedDir };
  const dataDirs: string[] = [];
  let orch: RunningOrchestrator | undefined;
  const start = async () => {
    const dir = await makeDataDir();
    dataDirs.push(dir);
    orch = await startOrchestrator(dir, { env });
    return orch;
  };
  try {
    const builder = await start();
    const templates = createClient(TemplateService, nodeTransport(builder.port, builder.token));
    for await (const event of templates.build({
      teamId: "bench",
      templateId: "bench-shared",
      buildId: "bench-shared-0",
      vcpu: 1,
      memoryMb: 512,
      fromBuildId: "base",
      steps: [{ type: "RUN", args: ["head -c 20000000 /dev/urandom > /home/user/blob"] }],
    })) {
      if (event.event.case === "result" && !event.event.value.ok) throw new Error(event.event.value.message);
    }
    await builder.stop();
    const manifest = JSON.parse(
      await readFile(path.join(sharedDir, "templates/builds/bench-shared-0/build.json"), "utf8"),
    ) as { layers: string[]; buildID: string };
    const snapshots = (await store.list("templates/builds/bench-shared-0/")).filter((k) =>
      k.includes("/snapshots/"),
    );

    // Copies of the build under new ids: each is a build no node has.
    for (let i = 1; i <= SAMPLES; i++) {
      const id = `bench-shared-${i}`;
      const file = path.join(work, "build.json");
      await writeFile(file, JSON.stringify({ ...manifest, buildID: id }));
      await store.putFile(`templates/builds/${id}/build.json`, file);
      for (const key of snapshots) {
        const copy = path.join(work, "snapshot");
        await store.getFile(key, copy);
        await store.putFile(key.replace("/bench-shared-0/", `/${id}/`), copy);
      }
    }

    const node = await start();
    const create = async (buildID: string) => {
      const started = performance.now();
      const info = await createSandbox(node, { templateID: "bench-shared", buildID, memoryMB: 512 });
      const ms = performance.now() - started;
      if (info.startKind !== "snapshot")
        throw new Error(`${buildID} started ${info.startKind}, not from its snapshot`);
      await node.client.delete({ sandboxId: info.config!.sandboxId });
      return ms;
    };
    const fetched: number[] = [];
    const cached: number[] = [];
    for (let i = 1; i <= SAMPLES; i++) {
      // The layer goes too: the fetch gets everything a fresh node would.
      for (const key of manifest.layers) {
        await rm(path.join(node.dataDir, "templates", "layers", key), { recursive: true, force: true });
      }
      fetched.push(await create(`bench-shared-${i}`));
      cached.push(await create(`bench-shared-${i}`));
    }
    return [
      {
        name: "create of a build fetched from shared storage (empty cache: manifest, a 20 MB layer, snapshot; directory store)",
        unit: "ms",
        value: summarize(fetched),
        baseline: { name: "create of the same build once cached on the node", value: summarize(cached) },
      },
    ];
  } finally {
    await orch?.stop().catch(() => undefined);
    for (const dir of dataDirs) await removeDataDir(dir);
    await rm(work, { recursive: true, force: true });
  }
}
