/**
 * A paused sandbox resumes on another node through the shared artifact store: node 1 pauses it
 * (publishing memory, disk and record), stops, and node 2 (its own data directory, the same
 * store) resumes it with its files and its processes' memory; the published pause is gone after.
 * Then back: node 2 pauses it again, node 1 returns holding its copy of the earlier pause, and a
 * resume of the newer pause there drops that copy for the published one. A volume no sandbox
 * mounts moves the same way (Release, then Create from that generation). One orchestrator runs at a
 * time (one per host): the nodes take turns.
 */
import assert from "node:assert/strict";
import { mkdtemp, readdir, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { loopDevicesUnder, mountsUnder, pausedKeys } from "@moat/orchestrator";
import { type SandboxInfo, SandboxState, VolumeService } from "@moat/shared/gen/orchestrator";
import { COUNTER_SERVER } from "../helpers/counter.js";
import {
  createSandbox,
  makeDataDir,
  newSandboxID,
  nodeTransport,
  type RunningOrchestrator,
  removeDataDir,
  sdkFor,
  startOrchestrator,
} from "../helpers/orchestrator.js";

async function askCounter(info: SandboxInfo): Promise<{ pid: number; count: number }> {
  const res = await fetch(`http://${info.hostAddress}:7000/`, { signal: AbortSignal.timeout(5000) });
  return (await res.json()) as { pid: number; count: number };
}

// The store's objects; each one's checksum sidecar (<key>.sha256) goes and comes with it.
async function storeKeys(store: string): Promise<string[]> {
  const entries = await readdir(store, { recursive: true, withFileTypes: true });
  const files = entries.filter((e) => e.isFile()).map((e) => path.join(e.parentPath, e.name));
  for (const file of files.filter((f) => !f.endsWith(".sha256")))
    assert.ok(files.includes(`${file}.sha256`), `${file} has its checksum beside it`);
  return files
    .filter((f) => !f.endsWith(".sha256"))
    .map((f) => path.relative(store, f))
    .sort();
}

const endIn = (ms: number) => timestampFromDate(new Date(Date.now() + ms));

async function refusal(call: Promise<unknown>): Promise<Code | undefined> {
  return call.then(
    () => undefined,
    (err: unknown) => ConnectError.from(err).code,
  );
}

describe("orchestrator: a paused sandbox resumes on another node", { timeout: 600_000 }, () => {
  const dirs: string[] = [];
  const running: RunningOrchestrator[] = [];
  let store = "";

  before(async () => {
    store = await mkdtemp(path.join(tmpdir(), "moat-test-artifacts-"));
  });

  after(async () => {
    for (const orch of running) await orch.stop().catch(() => undefined);
    for (const dir of dirs) {
      assert.deepEqual(await mountsUnder(dir), [], `no mount is left under ${dir}`);
      assert.deepEqual(await loopDevicesUnder(dir), [], `no loop device is left under ${dir}`);
      await removeDataDir(dir);
    }
    if (store) await rm(store, { recursive: true, force: true });
  });

  const start = async (dataDir: string) => {
    const orch = await startOrchestrator(dataDir, { env: { MOAT_ARTIFACTS: store } });
    running.push(orch);
    return orch;
  };
  const stop = async (orch: RunningOrchestrator) => {
    await orch.stop();
    running.splice(running.indexOf(orch), 1);
  };

  test("files and memory move with it; the published pause is removed once it runs", async () => {
    const [dir1, dir2] = [await makeDataDir(), await makeDataDir()];
    dirs.push(dir1, dir2);

    // Node 1: a file, and a process whose state is only in memory.
    let node = await start(dir1);
    let info = await createSandbox(node, { accessToken: "relocate-test-token-0123456789" });
    const id = info.config!.sandboxId;
    const sbx = sdkFor(info);
    await sbx.files.write("/home/user/moved.txt", "written on node 1\n");
    await sbx.files.write("/home/user/counter.py", COUNTER_SERVER);
    await sbx.commands.run("python3 /home/user/counter.py >/tmp/counter.log 2>&1", {
      background: true,
      timeoutMs: 0,
    });
    let first: { pid: number; count: number } | undefined;
    for (let i = 0; i < 100 && !first; i++) {
      first = await askCounter(info).catch(() => undefined);
      if (!first) await new Promise((r) => setTimeout(r, 100));
    }
    assert.ok(first, "the counter answers");

    const paused = (await node.client.pause({ sandboxId: id })).sandbox!;
    assert.equal(paused.state, SandboxState.PAUSED);
    assert.equal(paused.artifactGeneration, 1, "the pause is published as generation 1");
    const gen1 = pausedKeys(id, 1);
    assert.deepEqual(await storeKeys(store), [gen1.archive, gen1.manifest].sort());
    // Egress rules changed while paused go with it (its published record is published again).
    await node.client.updateNetwork({
      sandboxId: id,
      allowInternetAccess: true,
      allowOut: [],
      denyOut: ["203.0.113.0/24"],
    });
    await stop(node);

    // Node 2 has never seen it: only a resume naming the published pause finds it.
    node = await start(dir2);
    assert.equal(await refusal(node.client.get({ sandboxId: id })), Code.NotFound);
    assert.equal(
      await refusal(node.client.resume({ sandboxId: id, endTime: endIn(300_000) })),
      Code.NotFound,
    );
    assert.equal(
      await refusal(node.client.resume({ sandboxId: id, endTime: endIn(300_000), artifactGeneration: 7 })),
      Code.FailedPrecondition,
      "a pause that was never published is refused",
    );
    info = (await node.client.resume({ sandboxId: id, endTime: endIn(300_000), artifactGeneration: 1 }))
      .sandbox!;
    assert.equal(info.state, SandboxState.RUNNING);
    assert.equal(info.startKind, "resume", "its memory was restored");
    assert.deepEqual(info.config?.denyOut, ["203.0.113.0/24"], "the rules set while it was paused hold");
    info.config!.envdAccessToken = "relocate-test-token-0123456789";
    assert.equal(await sdkFor(info).files.read("/home/user/moved.txt"), "written on node 1\n");
    const there = await askCounter(info);
    assert.equal(there.pid, first.pid, "the same process runs on");
    assert.equal(there.count, first.count + 1, "with its memory");
    assert.deepEqual(await storeKeys(store), [], "the published pause is removed after the resume");
    await sdkFor(info).files.write("/home/user/moved.txt", "written on node 2\n");

    // Paused again on node 2 (generation 2); node 1 comes back with its copy of generation 1.
    const again = (await node.client.pause({ sandboxId: id })).sandbox!;
    assert.equal(again.artifactGeneration, 2);
    await stop(node);
    node = await start(dir1);
    assert.equal((await node.client.get({ sandboxId: id })).sandbox!.state, SandboxState.PAUSED);
    info = (await node.client.resume({ sandboxId: id, endTime: endIn(300_000), artifactGeneration: 2 }))
      .sandbox!;
    info.config!.envdAccessToken = "relocate-test-token-0123456789";
    assert.equal(
      await sdkFor(info).files.read("/home/user/moved.txt"),
      "written on node 2\n",
      "the newer pause was resumed, not node 1's copy",
    );
    assert.equal((await askCounter(info)).count, first.count + 2);
    assert.deepEqual(await storeKeys(store), []);

    // Node 2 comes back holding its copy of pause 2, and the sandbox moves on to it once more:
    // dropping that copy (what the API's reconcile does) leaves pause 3 in the store.
    assert.equal((await node.client.pause({ sandboxId: id })).sandbox!.artifactGeneration, 3);
    await stop(node);
    node = await start(dir2);
    await node.client.delete({ sandboxId: id });
    const gen3 = pausedKeys(id, 3);
    assert.deepEqual(await storeKeys(store), [gen3.archive, gen3.manifest].sort());
    info = (await node.client.resume({ sandboxId: id, endTime: endIn(300_000), artifactGeneration: 3 }))
      .sandbox!;
    assert.equal((await askCounter(info)).count, first.count + 3);

    // A kill of a published paused sandbox removes its published pause too.
    assert.equal((await node.client.pause({ sandboxId: id })).sandbox!.artifactGeneration, 4);
    assert.equal((await storeKeys(store)).length, 2);
    await node.client.delete({ sandboxId: id });
    assert.deepEqual(await storeKeys(store), []);
    await stop(node);
    // Node 1's copy of pause 3 is dropped too; neither node keeps anything of it.
    node = await start(dir1);
    await node.client.delete({ sandboxId: id });
    await stop(node);
    for (const dir of [dir1, dir2]) {
      assert.deepEqual(
        await readdir(path.join(dir, "sandboxes")).catch(() => []),
        [],
        `nothing left in ${dir}`,
      );
    }
  });
  test("a volume no sandbox mounts moves to another node with its files", async () => {
    const [dir1, dir2] = [await makeDataDir(), await makeDataDir()];
    dirs.push(dir1, dir2);
    const volume = { teamId: "team-relocate", volumeId: `v${Date.now().toString(36)}` };
    const withVolume = async (node: RunningOrchestrator) => {
      const res = await node.client.create({
        sandbox: {
          sandboxId: newSandboxID(),
          templateId: "base",
          teamId: volume.teamId,
          vcpu: 1,
          memoryMb: 512,
          allowInternetAccess: true,
          volumeMounts: [{ volumeId: volume.volumeId, name: "data", path: "/mnt/data" }],
        },
        endTime: endIn(300_000),
      });
      return res.sandbox!;
    };
    const volumes = (node: RunningOrchestrator) =>
      createClient(VolumeService, nodeTransport(node.port, node.token));

    let node = await start(dir1);
    await volumes(node).create({ volume, sizeMb: 64 });
    const sbx = await withVolume(node);
    await sdkFor(sbx).files.write("/mnt/data/kept.txt", "on the volume\n");
    assert.equal(
      await refusal(volumes(node).release({ volume, generation: 1 })),
      Code.FailedPrecondition,
      "a volume a sandbox of the node mounts stays",
    );
    await node.client.delete({ sandboxId: sbx.config!.sandboxId });
    await volumes(node).release({ volume, generation: 1 });
    assert.equal((await storeKeys(store)).length, 1, "its image is in the store");
    assert.deepEqual(
      await readdir(path.join(dir1, "volumes", volume.teamId)).catch(() => []),
      [],
      "and no longer on node 1",
    );
    await stop(node);

    node = await start(dir2);
    assert.equal(
      await refusal(volumes(node).create({ volume, sizeMb: 64, fromGeneration: 2 })),
      Code.FailedPrecondition,
      "only the generation released can be taken",
    );
    await volumes(node).create({ volume, sizeMb: 64, fromGeneration: 1 });
    assert.deepEqual(await storeKeys(store), [], "taken from the store");
    const there = await withVolume(node);
    assert.equal(await sdkFor(there).files.read("/mnt/data/kept.txt"), "on the volume\n");
    await node.client.delete({ sandboxId: there.config!.sandboxId });
    await volumes(node).delete(volume);
    await stop(node);
  });
});
