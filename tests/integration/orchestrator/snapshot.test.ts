/**
 * Fast starts on a real node: creates that restore the template snapshot, the cold start they
 * fall back to, and the warm pool (claimed, refilled, released on stop and after a crash).
 */
import assert from "node:assert/strict";
import { before, describe, test } from "node:test";
import { waitFor } from "../helpers/counter.js";
import { createSandbox, hostResources, sdkFor, settledHostResources } from "../helpers/orchestrator.js";
import { withOrchestrator } from "../helpers/with-orchestrator.js";

describe("orchestrator: template snapshots and the warm pool", { timeout: 600_000 }, () => {
  const orch = withOrchestrator();
  let baseline: Awaited<ReturnType<typeof hostResources>>;
  const poolFills = () => orch.log().split("warm pool full").length - 1;

  before(async () => {
    baseline = await hostResources(orch);
  });

  test("a create restores the template snapshot and is still its own machine", async () => {
    const info = await createSandbox(orch, { envVars: { WHO: "restored" } });
    assert.equal(info.startKind, "snapshot");
    const id = info.config!.sandboxId;
    const out = await sdkFor(info).commands.run(
      'hostname; getent hosts "$(hostname)"; echo "$WHO $E2B_SANDBOX_ID"',
    );
    const [hostname, hosts, env] = out.stdout.trim().split("\n");
    assert.equal(hostname, id);
    assert.match(hosts!, new RegExp(`127\\.0\\.1\\.1\\s+${id}`));
    assert.equal(env, `restored ${id}`);

    // Another memory size than the snapshot's boots cold.
    const big = await createSandbox(orch, { memoryMB: 1024 });
    assert.equal(big.startKind, "cold");
    assert.equal((await sdkFor(big).commands.run("echo cold")).stdout, "cold\n");
    await orch.client.delete({ sandboxId: id });
    await orch.client.delete({ sandboxId: big.config!.sandboxId });
  });

  test("a snapshot that fails to restore: the create starts cold instead", async () => {
    await orch.restart({ MOAT_FAULTS: "snapshot:restored=error" });
    const info = await createSandbox(orch);
    assert.equal(info.startKind, "cold");
    assert.equal((await sdkFor(info).commands.run("echo fell back")).stdout, "fell back\n");
    await orch.client.delete({ sandboxId: info.config!.sandboxId });
    assert.deepEqual(await settledHostResources(orch, baseline), baseline, "the failed restore left nothing");
  });

  test("the warm pool: claimed by a create that fits, refilled, emptied on stop and after a crash", async () => {
    await orch.restart({ MOAT_POOL_SIZE: "2", MOAT_NETWORK_POOL_SIZE: "2" });
    await waitFor(() => poolFills() >= 1, "the pool to fill");
    const fills = poolFills();
    const started = performance.now();
    const info = await createSandbox(orch, { vcpu: 2, memoryMB: 512, envVars: { WHO: "pooled" } });
    const createMs = performance.now() - started;
    assert.equal(info.startKind, "pool");
    const sbx = sdkFor(info);
    const out = await sbx.commands.run('hostname; echo "$WHO"');
    assert.equal(out.stdout, `${info.config!.sandboxId}\npooled\n`);
    console.log(`create from the pool: ${createMs.toFixed(0)} ms`);
    await waitFor(() => poolFills() > fills, "the pool to refill");

    // A crash leaves the pool's sandboxes behind; the next start releases them.
    await orch.stop("SIGKILL");
    await orch.restart();
    assert.match(orch.log(), /"released":\["pool-[0-9a-f]+","pool-[0-9a-f]+"\]/);
    assert.equal((await orch.client.get({ sandboxId: info.config!.sandboxId })).sandbox!.startKind, "pool");
    await orch.client.delete({ sandboxId: info.config!.sandboxId });
    assert.deepEqual(await settledHostResources(orch, baseline), baseline);

    // A clean stop empties the pool.
    await orch.restart({ MOAT_POOL_SIZE: "1", MOAT_NETWORK_POOL_SIZE: "2" });
    await waitFor(() => poolFills() > fills + 1, "the pool to fill again");
    await orch.stop();
    assert.deepEqual(await hostResources(orch), baseline, "a stopped node keeps no pool sandbox or network");
    await orch.restart();
  });
});
