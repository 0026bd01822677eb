/**
 * Pause, resume and fast starts end to end: the unmodified e2b SDK against `moat up` with a warm
 * pool, traffic through the client proxy by Host as a browser sends it.
 */
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { Sandbox } from "e2b";
import { COUNTER_SERVER, waitFor } from "../helpers/counter.js";
import { getByHost, type RunningMoat, startMoat, useMoat } from "../helpers/moat-up.js";

async function askCounter(moat: RunningMoat, sandboxID: string): Promise<{ pid: number; count: number }> {
  const res = await getByHost(moat, sandboxID, 7000, "/");
  assert.equal(res.status, 200, res.body);
  return JSON.parse(res.body) as { pid: number; count: number };
}

describe("moat up: pause, resume, snapshots and the warm pool", { timeout: 900_000 }, () => {
  let moat: RunningMoat;
  // Every fill, refills included (those are said at debug).
  const poolFills = () => moat.log().split("warm pool full").length - 1;

  before(async () => {
    moat = await startMoat({ env: { MOAT_POOL_SIZE: "1", MOAT_LOG_LEVEL: "debug" } });
    useMoat(moat);
    await waitFor(() => poolFills() >= 1, "the warm pool");
  });

  after(async () => {
    await moat?.cleanup();
  });

  test("a create from the pool is a sandbox of its own: id, hostname, env, token", async () => {
    const fills = poolFills();
    const a = await Sandbox.create("base", { envs: { WHO: "a" } });
    await waitFor(() => poolFills() > fills, "the pool to refill");
    const b = await Sandbox.create("base", { envs: { WHO: "b" } });
    for (const [sbx, who] of [
      [a, "a"],
      [b, "b"],
    ] as const) {
      // The first command after the create: the name set through envd's helper, not an exec.
      const out = await sbx.commands.run(
        'hostname; echo "$WHO $E2B_SANDBOX_ID"; head -c 16 /dev/urandom | od -An -tx1; getent hosts "$(hostname)"',
      );
      const [hostname, env, random, hosts] = out.stdout.trim().split("\n");
      assert.equal(hostname, sbx.sandboxId);
      assert.equal(env, `${who} ${sbx.sandboxId}`);
      assert.match(random!, /[0-9a-f]{2}/);
      assert.match(hosts!, new RegExp(`\\s${sbx.sandboxId}$`), "the name resolves");
      // The helper that set it is gone: nothing of the create is left running in the sandbox.
      const comms = await sbx.commands.run("cat /proc/[0-9]*/comm 2>/dev/null | sort -u");
      assert.doesNotMatch(comms.stdout, /^perl$/m);
    }
    const randoms = await Promise.all(
      [a, b].map((s) => s.commands.run("head -c 16 /dev/urandom | od -An -tx1")),
    );
    assert.notEqual(randoms[0]!.stdout, randoms[1]!.stdout, "each sandbox draws its own randomness");
    // Each sandbox's token is its own: a's token does not open b.
    const stolen = await fetch(`${moat.env.E2B_SANDBOX_URL}/envs`, {
      headers: { "e2b-sandbox-id": b.sandboxId, "e2b-sandbox-port": "49983", "x-access-token": "wrong" },
    });
    assert.equal(stolen.status, 401);
    await Promise.all([a.kill(), b.kill()]);
  });

  test("pause and connect with the SDK; traffic to a paused sandbox resumes it", async () => {
    const sbx = await Sandbox.create("base", { lifecycle: { onTimeout: "pause", autoResume: true } });
    await sbx.files.write("/home/user/counter.py", COUNTER_SERVER);
    // No time limit: the SDK's default 60 s would end the counter, not the pause.
    await sbx.commands.run("python3 /home/user/counter.py", { background: true, timeoutMs: 0 });
    let first: { pid: number; count: number } | undefined;
    for (let i = 0; i < 50 && !first; i++) {
      first = await askCounter(moat, sbx.sandboxId).catch(() => undefined);
      if (!first) await new Promise((r) => setTimeout(r, 100));
    }
    assert.ok(first, "the counter server answers through the proxy");
    await sbx.files.write("/home/user/notes.txt", "before the pause");

    assert.equal(await sbx.pause(), true);
    assert.equal(await sbx.pause(), false, "a second pause reports it was already paused");
    const paused = await Sandbox.list({ query: { state: ["paused"] } }).nextItems();
    assert.ok(paused.some((s) => s.sandboxId === sbx.sandboxId));
    assert.equal((await sbx.getInfo()).state, "paused");

    const resumed = await Sandbox.connect(sbx.sandboxId);
    assert.equal(await resumed.files.read("/home/user/notes.txt"), "before the pause");
    assert.deepEqual(await askCounter(moat, sbx.sandboxId), { pid: first.pid, count: first.count + 1 });

    // Paused again, then a request by Host wakes it: the process answers with its memory intact.
    assert.equal(await resumed.pause(), true);
    assert.deepEqual(await askCounter(moat, sbx.sandboxId), { pid: first.pid, count: first.count + 2 });
    assert.equal((await sbx.getInfo()).state, "running");
    await sbx.kill();
  });

  test("a paused sandbox survives a moat up restart; a paused sandbox can be killed", async () => {
    const kept = await Sandbox.create("base");
    await kept.files.write("/home/user/kept.txt", "still here");
    const shell = await kept.commands.run("sleep 600", { background: true });
    assert.equal(await kept.pause(), true);
    const doomed = await Sandbox.create("base");
    assert.equal(await doomed.pause(), true);

    await moat.restart();
    useMoat(moat);
    const listed = await Sandbox.list({ query: { state: ["paused"] } }).nextItems();
    assert.ok(listed.some((s) => s.sandboxId === kept.sandboxId));

    const back = await Sandbox.connect(kept.sandboxId);
    assert.equal(await back.files.read("/home/user/kept.txt"), "still here");
    const processes = await back.commands.list();
    assert.ok(
      processes.some((p) => p.pid === shell.pid),
      "the process started before the pause still runs",
    );
    assert.equal(await Sandbox.kill(doomed.sandboxId), true);
    assert.equal(await Sandbox.kill(doomed.sandboxId), false);
    await back.kill();
  });
});
