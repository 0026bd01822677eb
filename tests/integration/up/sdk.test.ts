/** End to end: the unmodified e2b SDK against `moat up`, as a user would drive it. */
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { after, before, describe, test } from "node:test";
import { CommandExitError, NotFoundError, Sandbox } from "e2b";
import { type RunningMoat, startMoat, useMoat } from "../helpers/moat-up.js";

describe("moat up with the official e2b SDK", { timeout: 900_000 }, () => {
  let moat: RunningMoat;
  let sbx: Sandbox;

  before(async () => {
    moat = await startMoat();
    useMoat(moat);
    sbx = await Sandbox.create("base", {
      metadata: { suite: "e2e", run: "1" },
      envs: { GREETING: "hello from moat" },
      timeoutMs: 300_000,
    });
  });

  after(async () => {
    await moat?.cleanup();
  });

  test("create: the sandbox runs the base template with the env vars given", async () => {
    assert.match(sbx.sandboxId, /^[a-z0-9]+$/);
    const out = await sbx.commands.run(
      'echo "$GREETING"; whoami; cat /etc/os-release | grep VERSION_CODENAME',
    );
    assert.equal(out.stdout, "hello from moat\nuser\nVERSION_CODENAME=bookworm\n");
    assert.equal(await sbx.isRunning(), true);
  });

  test("commands: foreground, background, stdin, kill", async () => {
    await assert.rejects(
      sbx.commands.run("exit 4"),
      (e: unknown) => e instanceof CommandExitError && e.exitCode === 4,
    );
    const bg = await sbx.commands.run("sleep 0.3; echo done", { background: true });
    assert.equal((await bg.wait()).stdout, "done\n");
    const cat = await sbx.commands.run("cat", { background: true, stdin: true });
    await sbx.commands.sendStdin(cat.pid, "through stdin");
    await sbx.commands.closeStdin(cat.pid);
    assert.equal((await cat.wait()).stdout, "through stdin");
    const sleeper = await sbx.commands.run("sleep 60", { background: true });
    assert.equal(await sbx.commands.kill(sleeper.pid), true);
    await assert.rejects(sleeper.wait());
  });

  test("envd starts commands through its spawn addon, from the read-only mount", async () => {
    // Without it envd falls back to Node's fork silently: right, but 50 ms slower per command.
    const maps = await sbx.commands.run(
      "for p in /proc/[0-9]*; do grep -qs envd.mjs $p/cmdline && grep -s moat_spawn $p/maps; done; true",
      { user: "root" },
    );
    assert.match(maps.stdout, / \/opt\/moat\/envd\/native\/moat_spawn\.node\n/);
  });

  test("a login shell runs no program of its own before the command, as the user and as root", async () => {
    // Every SDK command is `bash -l -c`, and each exec costs tens of milliseconds under gVisor.
    for (const user of ["user", "root"] as const) {
      const trace = await sbx.commands.run("bash -lxc true 2>&1", { user });
      assert.doesNotMatch(trace.stdout, /^\++ (id|mesg|tty)\b/m, `${user}: ${trace.stdout}`);
    }
  });

  test("pty: input and output through a terminal", async () => {
    let text = "";
    const terminal = await sbx.pty.create({
      cols: 100,
      rows: 30,
      onData: (d) => {
        text += new TextDecoder().decode(d);
      },
    });
    await sbx.pty.sendInput(terminal.pid, new TextEncoder().encode("stty size; exit\n"));
    await terminal.wait();
    assert.match(text, /30 100/);
  });

  test("files: write, read, list, watch, 10 MB upload and download", async () => {
    const events: string[] = [];
    await sbx.files.makeDir("/home/user/watched");
    const watcher = await sbx.files.watchDir("/home/user/watched", (e) => events.push(`${e.type}:${e.name}`));
    await sbx.files.write("/home/user/watched/a.txt", "alpha");
    assert.equal(await sbx.files.read("/home/user/watched/a.txt"), "alpha");
    const listed = await sbx.files.list("/home/user/watched");
    assert.deepEqual(
      listed.map((e) => e.name),
      ["a.txt"],
    );
    const big = randomBytes(10 * 1024 * 1024);
    await sbx.files.write("/home/user/big.bin", big);
    const back = await sbx.files.read("/home/user/big.bin", { format: "bytes" });
    assert.ok(Buffer.from(back).equals(big));
    for (let i = 0; i < 40 && !events.some((e) => e.endsWith(":a.txt")); i++)
      await new Promise((r) => setTimeout(r, 50));
    await watcher.stop();
    assert.ok(
      events.some((e) => e.endsWith(":a.txt")),
      `watch saw a.txt: ${events}`,
    );
  });

  test("list with filters, getInfo, setTimeout", async () => {
    const listed = await Sandbox.list({
      query: { metadata: { suite: "e2e" }, state: ["running"] },
    }).nextItems();
    assert.ok(listed.some((s) => s.sandboxId === sbx.sandboxId));
    const none = await Sandbox.list({ query: { metadata: { suite: "other" } } }).nextItems();
    assert.ok(!none.some((s) => s.sandboxId === sbx.sandboxId));
    const info = await sbx.getInfo();
    assert.equal(info.sandboxId, sbx.sandboxId);
    assert.equal(info.templateId, "base");
    assert.equal(info.metadata.run, "1");
    await sbx.setTimeout(600_000);
    const later = await sbx.getInfo();
    assert.ok(later.endAt.getTime() > Date.now() + 500_000);
  });

  test("connect to a running sandbox by id", async () => {
    const again = await Sandbox.connect(sbx.sandboxId);
    assert.equal((await again.commands.run("echo connected")).stdout, "connected\n");
  });

  test("a sandbox expires at its timeout; setTimeout moved earlier ends it", async () => {
    const short = await Sandbox.create("base", { timeoutMs: 60_000 });
    const moved = Date.now();
    await short.setTimeout(2_000);
    assert.equal(await short.isRunning(), true, "still running before its new end time");
    // Ends 2 s later; the kill behind it takes a moment more on a busy host.
    while ((await short.isRunning()) && Date.now() - moved < 30_000) {
      await new Promise((r) => setTimeout(r, 250));
    }
    assert.equal(await short.isRunning(), false);
    // The API forgets it once the node reports the kill done.
    const gone = async () =>
      short.getInfo().then(
        () => false,
        (e: unknown) => e instanceof NotFoundError,
      );
    while (!(await gone()) && Date.now() - moved < 30_000) await new Promise((r) => setTimeout(r, 250));
    await assert.rejects(short.getInfo(), (e: unknown) => e instanceof NotFoundError);
  });

  test("a second team can neither see nor kill the first team's sandbox", async () => {
    const res = await fetch(`${moat.env.E2B_API_URL}/admin/teams`, {
      method: "POST",
      headers: { "x-admin-token": moat.env.MOAT_ADMIN_TOKEN!, "content-type": "application/json" },
      body: JSON.stringify({ name: "other-team" }),
    });
    assert.equal(res.status, 201);
    const other = (await res.json()) as { apiKey: string };
    const theirs = await Sandbox.list({ apiKey: other.apiKey }).nextItems();
    assert.ok(!theirs.some((s) => s.sandboxId === sbx.sandboxId));
    assert.equal(await Sandbox.kill(sbx.sandboxId, { apiKey: other.apiKey }), false);
    await assert.rejects(
      Sandbox.getInfo(sbx.sandboxId, { apiKey: other.apiKey }),
      (e: unknown) => e instanceof NotFoundError,
    );
    assert.equal(await sbx.isRunning(), true);
  });

  test("kill: the sandbox is gone and the proxy answers 502 for it", async () => {
    assert.equal(await sbx.kill().then(() => true), true);
    assert.equal(await sbx.isRunning(), false);
    assert.equal(await Sandbox.kill(sbx.sandboxId), false);
  });

  test("a second moat up on the same data directory keeps its teams and keys", async () => {
    const key = moat.env.E2B_API_KEY;
    await moat.restart();
    assert.equal(moat.env.E2B_API_KEY, key);
    useMoat(moat);
    const fresh = await Sandbox.create("base");
    assert.equal((await fresh.commands.run("echo again")).stdout, "again\n");
    await fresh.kill();
  });
});
