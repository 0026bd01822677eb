/**
 * Forks end to end: the unmodified e2b SDK against `moat up`. A fork carries the source's memory
 * (a background server's counter goes on from where it was, in the same process), processes and
 * files, under its own id, hostname and token; the source runs on; forks work while a command
 * streams and files are written, and of a fork; a crash of moat mid-fork leaves the source
 * running and nothing half-made; bad requests get clear errors; and nothing of a fork's snapshot,
 * or of a fork, stays on the host.
 */
import assert from "node:assert/strict";
import { once } from "node:events";
import { readdir } from "node:fs/promises";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import { NotFoundError, RateLimitError, Sandbox, SandboxError, SandboxNotFoundError } from "e2b";
import { COUNTER_SERVER } from "../helpers/counter.js";
import { assertNothingOutlives, moatCgroups, settledHostState } from "../helpers/host-state.js";
import { getByHost, type RunningMoat, startMoat, useMoat } from "../helpers/moat-up.js";

type Counter = { pid: number; count: number };

describe("moat up: forks", { timeout: 600_000 }, () => {
  let moat: RunningMoat;
  let foreignCgroups: string[] = [];
  let source: Sandbox;
  let sourceCounter: Counter;

  async function askCounter(sandboxID: string): Promise<Counter> {
    const res = await getByHost(moat, sandboxID, 7000, "/");
    assert.equal(res.status, 200, res.body);
    return JSON.parse(res.body) as Counter;
  }

  /** Each fork is its own sandbox, with its own hostname, id, token and a copy of the source. */
  async function checkFork(fork: Sandbox, at: Counter): Promise<void> {
    assert.notEqual(fork.sandboxId, source.sandboxId);
    // The same process, its count one further from where the source's was when it was forked.
    assert.deepEqual(await askCounter(fork.sandboxId), { pid: at.pid, count: at.count + 1 });
    assert.equal(await fork.files.read("/home/user/state.txt"), "before the fork");
    const out = await fork.commands.run('hostname; echo "$E2B_SANDBOX_ID"');
    assert.equal(out.stdout, `${fork.sandboxId}\n${fork.sandboxId}\n`);
    // The source's token does not open the fork; the fork's own does.
    const envs = (token: string) =>
      fetch(`${moat.env.E2B_SANDBOX_URL}/envs`, {
        headers: { "e2b-sandbox-id": fork.sandboxId, "e2b-sandbox-port": "49983", "x-access-token": token },
      });
    assert.equal((await envs(source.envdAccessToken!)).status, 401, "the source's token opens the fork");
    assert.equal((await envs(fork.envdAccessToken!)).status, 200);
  }

  /** Nothing of a fork's snapshot is left, and the host holds what the live sandboxes need. */
  async function hostIsClean(): Promise<void> {
    assert.deepEqual(await readdir(path.join(moat.dataDir, "snapshots")), [], "no fork snapshot left");
    const host = await settledHostState(moat.dataDir, { foreignCgroups }, 15_000);
    assert.deepEqual(
      host.actual,
      host.expected,
      "the host holds what the live sandboxes need, and nothing else",
    );
  }

  before(async () => {
    foreignCgroups = await moatCgroups();
    // No networks made ahead: the host must hold only what the sandboxes' records name.
    moat = await startMoat({ env: { MOAT_NETWORK_POOL_SIZE: "0", MOAT_TEAM_MAX_SANDBOXES: "8" } });
    useMoat(moat);
    source = await Sandbox.create("base", { timeoutMs: 600_000 });
    await source.files.write("/home/user/counter.py", COUNTER_SERVER);
    await source.commands.run("python3 /home/user/counter.py", { background: true, timeoutMs: 0 });
    await source.files.write("/home/user/state.txt", "before the fork");
    for (let i = 0; i < 100 && !sourceCounter; i++) {
      sourceCounter = await askCounter(source.sandboxId).catch(() => undefined as unknown as Counter);
      if (!sourceCounter) await new Promise((r) => setTimeout(r, 100));
    }
    assert.ok(sourceCounter, "the counter server answers");
  });

  after(async () => {
    if (!moat) return;
    const dataDir = moat.dataDir;
    await moat.cleanup();
    await assertNothingOutlives(dataDir, foreignCgroups);
  });

  test("a fork, then a fork of 3: memory, processes and files carried over; the source runs on", async () => {
    const [one] = await source.fork({ timeoutMs: 120_000 });
    assert.ok(one instanceof Sandbox, String(one));
    await checkFork(one, sourceCounter);
    // The source goes on from its own state, untouched by the fork's.
    sourceCounter = await askCounter(source.sandboxId);
    assert.equal(sourceCounter.count, 2);
    await one.files.write("/home/user/state.txt", "written in the fork");
    assert.equal(await source.files.read("/home/user/state.txt"), "before the fork");

    const three = await Sandbox.fork(source.sandboxId, { count: 3, timeoutMs: 120_000 });
    assert.equal(three.length, 3);
    const ids = new Set([one.sandboxId]);
    for (const fork of three) {
      assert.ok(fork instanceof Sandbox, String(fork));
      await checkFork(fork, sourceCounter);
      ids.add(fork.sandboxId);
    }
    assert.equal(ids.size, 4, "every fork has an id of its own");
    assert.equal(await source.isRunning(), true);
    assert.deepEqual(await askCounter(source.sandboxId), { pid: sourceCounter.pid, count: 3 });
    sourceCounter = { pid: sourceCounter.pid, count: 3 };
    const listed = new Set((await Sandbox.list().nextItems()).map((s) => s.sandboxId));
    for (const id of ids) assert.ok(listed.has(id), `${id} is listed`);
    await Promise.all([one, ...three].map((f) => (f as Sandbox).kill()));
    await hostIsClean();
  });

  test("a fork while a command streams output and a file is being written, and a fork of that fork", async () => {
    const writer = await source.commands.run(
      "sh -c 'i=0; while :; do i=$((i+1)); echo \"line $i\" >> /home/user/ticks; sleep 0.05; done'",
      { background: true, timeoutMs: 0 },
    );
    let streamed = 0;
    const stream = source.commands
      .run("for i in $(seq 1 100); do echo out $i; sleep 0.1; done", {
        onStdout: () => {
          streamed++;
        },
        timeoutMs: 0,
      })
      .then(
        () => "ended",
        (err: unknown) => `broken: ${String(err)}`,
      );
    while (streamed < 5) await new Promise((r) => setTimeout(r, 50));
    const [fork] = await source.fork({ timeoutMs: 120_000 });
    assert.ok(fork instanceof Sandbox, String(fork));
    // The file the writer was appending to is whole in the fork: complete lines, counting up.
    const lines = (await fork.files.read("/home/user/ticks")).split("\n").filter(Boolean);
    assert.ok(lines.length > 0);
    assert.deepEqual(
      lines,
      lines.map((_, i) => `line ${i + 1}`),
    );
    // Both writers go on, each in its own sandbox.
    await new Promise((r) => setTimeout(r, 500));
    const later = (await fork.files.read("/home/user/ticks")).split("\n").filter(Boolean);
    assert.ok(later.length > lines.length, "the fork's writer carries on");
    const forked = await fork.commands.run("pgrep -fc '[s]eq 1 100'", { user: "root" });
    assert.equal(forked.stdout.trim(), "1", "the streaming command runs on in the fork");
    // The source's stream was cut (gVisor resets connections at a checkpoint; the SDK does not
    // reconnect); the command itself runs on in the source, and the source answers at once.
    const outcome = await stream;
    const running = await source.commands.run("pgrep -fc '[s]eq 1 100' || true", { user: "root" });
    assert.ok(outcome === "ended" || running.stdout.trim() === "1", `${outcome}; ${running.stdout}`);

    const [grandchild] = await fork.fork({ timeoutMs: 120_000 });
    assert.ok(grandchild instanceof Sandbox, String(grandchild));
    assert.equal(await grandchild.files.read("/home/user/state.txt"), "before the fork");
    assert.deepEqual(await askCounter(grandchild.sandboxId), { pid: sourceCounter.pid, count: 4 });
    const hostname = await grandchild.commands.run("hostname");
    assert.equal(hostname.stdout.trim(), grandchild.sandboxId);
    await Promise.all([fork.kill(), grandchild.kill()]);
    await source.commands.kill(writer.pid);
    await hostIsClean();
  });

  for (const step of ["sandbox-snapshot:stopped", "sandbox-snapshot:restored"]) {
    test(`a crash of moat mid-fork (${step}): after the restart the source runs on, and no fork or snapshot is left`, async () => {
      await moat.restart({ signal: "SIGKILL", env: { MOAT_FAULTS: `${step}=crash` } });
      useMoat(moat);
      const child = moat.child;
      const died = once(child, "exit");
      await assert.rejects(source.fork({ count: 2 }));
      await died;
      assert.equal(child.signalCode, "SIGKILL", `moat died at ${step}`);
      await moat.restart();
      useMoat(moat);
      // The source was stopped in place with its disk frozen (or forks were restoring): it runs on.
      sourceCounter = { pid: sourceCounter.pid, count: sourceCounter.count + 1 };
      assert.deepEqual(await askCounter(source.sandboxId), sourceCounter);
      await source.files.write("/home/user/after-crash.txt", "the disk takes writes");
      assert.equal(await source.files.read("/home/user/state.txt"), "before the fork");
      const deadline = Date.now() + 20_000;
      let listed = await Sandbox.list().nextItems();
      while (listed.length !== 1 && Date.now() < deadline) {
        await new Promise((r) => setTimeout(r, 250));
        listed = await Sandbox.list().nextItems();
      }
      assert.deepEqual(
        listed.map((s) => [s.sandboxId, s.state]),
        [[source.sandboxId, "running"]],
      );
      await hostIsClean();
    });
  }

  test("bad forks: unknown, another team's, paused, counts out of bounds, past the team's sandboxes", async () => {
    await assert.rejects(Sandbox.fork("nosuchsandbox0000000"), SandboxNotFoundError);
    const res = await fetch(`${moat.env.E2B_API_URL}/admin/teams`, {
      method: "POST",
      headers: { "x-admin-token": moat.env.MOAT_ADMIN_TOKEN!, "content-type": "application/json" },
      body: JSON.stringify({ name: "fork-outsider" }),
    });
    const outsider = (await res.json()) as { apiKey: string };
    await assert.rejects(Sandbox.fork(source.sandboxId, { apiKey: outsider.apiKey }), SandboxNotFoundError);

    const post = (json: unknown) =>
      fetch(`${moat.env.E2B_API_URL}/sandboxes/${source.sandboxId}/fork`, {
        method: "POST",
        headers: { "x-api-key": moat.env.E2B_API_KEY!, "content-type": "application/json" },
        body: JSON.stringify(json),
      });
    for (const [json, status, pattern] of [
      [{ count: 0 }, 400, /count must be an integer from 1/],
      [{ count: 101 }, 400, /count must be an integer from 1 to 100/],
      [{ count: 8 }, 400, /lower than the team's maximum of concurrent sandboxes \(8\)/],
      [{ count: "two" }, 400, /count/],
      [{ timeout: 10 * 86_400 }, 400, /timeout/],
    ] as const) {
      const r = await post(json);
      const body = (await r.json()) as { code: number; message: string };
      assert.equal(r.status, status, body.message);
      assert.equal(body.code, status);
      assert.match(body.message, pattern);
    }
    // 7 forks would be 8 running with the source, plus the one below: past 8.
    const extra = await Sandbox.create("base");
    await assert.rejects(source.fork({ count: 7 }), RateLimitError);
    await extra.kill();

    const paused = await Sandbox.create("base");
    assert.equal(await paused.pause(), true);
    await assert.rejects(paused.fork(), (err: unknown) => {
      assert.ok(err instanceof SandboxError && !(err instanceof NotFoundError));
      assert.match(err.message, /^409: .*paused: resume it/);
      return true;
    });
    await paused.kill();
    await source.kill();
    await assert.rejects(source.fork(), SandboxNotFoundError);
    await hostIsClean();
  });
});
