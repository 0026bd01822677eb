import assert from "node:assert/strict";
import { mkdir, writeFile } from "node:fs/promises";
import path from "node:path";
import { before, describe, test } from "node:test";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { runCommand } from "@moat/shared";
import { SandboxEventType } from "@moat/shared/gen/orchestrator";
import { createSandbox, hostResources, sdkFor, settledHostResources } from "../helpers/orchestrator.js";
import { withOrchestrator } from "../helpers/with-orchestrator.js";

describe("orchestrator: end times and restart safety", { timeout: 600_000 }, () => {
  const orch = withOrchestrator();
  let baseline: Awaited<ReturnType<typeof hostResources>>;

  before(async () => {
    baseline = await hostResources(orch);
  });

  test("a sandbox is killed at its end time; UpdateEndTime moves it", async () => {
    const events: Array<{ id: string; type: SandboxEventType }> = [];
    const abort = new AbortController();
    const watching = (async () => {
      for await (const ev of orch.client.watchEvents({}, { signal: abort.signal })) {
        events.push({ id: ev.sandboxId, type: ev.type });
      }
    })().catch(() => undefined);
    const expired = (id: string) => events.some((e) => e.id === id && e.type === SandboxEventType.EXPIRED);
    const short = await createSandbox(orch, { timeoutMs: 2000 });
    const extended = await createSandbox(orch, { timeoutMs: 2000 });
    await orch.client.updateEndTime({
      sandboxId: extended.config!.sandboxId,
      endTime: timestampFromDate(new Date(Date.now() + 120_000)),
    });
    // The end time passes after 2 s; the kill that follows takes a moment more on a busy host.
    const deadline = Date.now() + 30_000;
    while (!expired(short.config!.sandboxId) && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 100));
    }
    assert.ok(
      expired(short.config!.sandboxId),
      "an EXPIRED event was sent for the sandbox past its end time",
    );
    const listed = (await orch.client.list({})).sandboxes.map((s) => s.config!.sandboxId);
    assert.ok(!listed.includes(short.config!.sandboxId), "the sandbox past its end time is gone");
    assert.ok(listed.includes(extended.config!.sandboxId), "the extended sandbox still runs");
    assert.ok(!expired(extended.config!.sandboxId));
    abort.abort();
    await watching;
    await orch.client.delete({ sandboxId: extended.config!.sandboxId });
  });

  test("SIGKILL of the orchestrator: running sandboxes stay reachable, orphans are reaped", async () => {
    const a = await createSandbox(orch);
    const b = await createSandbox(orch);
    await sdkFor(a).files.write("/home/user/before-crash.txt", "still here");

    // Leftovers of a create that crashed halfway, and resources no record owns.
    const half = path.join(orch.dataDir, "sandboxes", "halfcreated");
    await mkdir(half, { recursive: true });
    await writeFile(
      path.join(half, "sandbox.json"),
      JSON.stringify({
        sandboxID: "halfcreated",
        slotIndex: 16000,
        lifecycleID: "moat-halfcreated-000000",
        state: "starting",
      }),
    );
    await runCommand(["ip", "netns", "add", "moat-n16000"]);
    await runCommand(["ip", "netns", "add", "moat-g16001"]);
    // Its disk, mounted; and a loop device on another sandbox's image that no mount uses (a crash
    // between attaching and mounting).
    const image = path.join(half, "disk.img");
    await runCommand(["truncate", "-s", "64M", image]);
    await runCommand(["mkfs.ext4", "-q", "-F", image]);
    await mkdir(path.join(half, "disk"));
    await runCommand(["mount", "-o", "loop,nosuid,nodev", image, path.join(half, "disk")]);
    const stray = path.join(orch.dataDir, "sandboxes", "strayloop");
    await mkdir(stray);
    await runCommand(["truncate", "-s", "64M", path.join(stray, "disk.img")]);
    await runCommand(["losetup", "--find", path.join(stray, "disk.img")]);
    assert.equal((await hostResources(orch)).loops.length, 4, "a and b's disks, and the two leftovers");

    await orch.stop("SIGKILL");
    // Still running without an orchestrator.
    assert.equal((await fetch(`http://${a.hostAddress}:49983/health`)).status, 204);
    await orch.restart();

    const listed = (await orch.client.list({})).sandboxes.map((s) => s.config!.sandboxId).sort();
    assert.deepEqual(listed, [a.config!.sandboxId, b.config!.sandboxId].sort());
    const after = sdkFor(a);
    assert.equal(await after.files.read("/home/user/before-crash.txt"), "still here");
    assert.equal((await after.commands.run("echo alive")).stdout, "alive\n");
    const resources = await hostResources(orch);
    assert.ok(!resources.namespaces.includes("moat-n16000") && !resources.namespaces.includes("moat-g16001"));
    assert.ok(!resources.dirs.includes("halfcreated") && !resources.dirs.includes("strayloop"));
    assert.equal(resources.loops.length, 2, `only a and b's disks are left: ${resources.loops}`);

    // An adopted sandbox is killed like any other, and leaves nothing behind.
    await orch.client.delete({ sandboxId: a.config!.sandboxId });
    await orch.client.delete({ sandboxId: b.config!.sandboxId });
    assert.deepEqual(await settledHostResources(orch, baseline), baseline);
  });

  test("bad requests get clear errors", async () => {
    await assert.rejects(createSandbox(orch, { sandboxID: "Bad_ID" }), /sandbox id/);
    await assert.rejects(createSandbox(orch, { vcpu: 1000 }), /vcpu/);
    await assert.rejects(
      orch.client.create({
        sandbox: { sandboxId: "nosuchtemplate", templateId: "nope", vcpu: 1, memoryMb: 256 },
        endTime: timestampFromDate(new Date(Date.now() + 10_000)),
      }),
      /template 'nope'/,
    );
    await assert.rejects(orch.client.delete({ sandboxId: "missing" }), /not found/);
    await assert.rejects(
      orch.client.updateEndTime({ sandboxId: "missing", endTime: timestampFromDate(new Date()) }),
      /not found/,
    );
  });
});
