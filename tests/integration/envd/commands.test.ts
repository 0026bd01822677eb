import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { CommandExitError, type Sandbox } from "e2b";
import { debugSandbox, ENVD_URL, type RunningEnvd, startEnvd } from "../helpers/envd.js";

// Both ways envd starts a command: its vfork addon (the default) and Node's child_process (the
// fallback where the addon does not load). Every test below holds for both.
for (const spawner of ["vfork", "node"] as const)
  describe(`envd commands through the e2b SDK (${spawner})`, () => {
    let envd: RunningEnvd;
    let sbx: Sandbox;

    before(async () => {
      envd = await startEnvd([], "debug", spawner === "node" ? { MOAT_ENVD_SPAWN: "node" } : {});
      sbx = await debugSandbox();
    });

    test("envd starts commands the way this suite is about", () => {
      assert.match(envd.log(), new RegExp(`"spawner":"${spawner}"`));
    });
    after(async () => {
      await envd.stop();
    });

    test("foreground command returns stdout, stderr and the exit code", async () => {
      const result = await sbx.commands.run("echo out; echo err >&2");
      assert.equal(result.exitCode, 0);
      assert.equal(result.stdout, "out\n");
      assert.equal(result.stderr, "err\n");
    });

    test("a non-zero exit throws CommandExitError with the output", async () => {
      await assert.rejects(sbx.commands.run("echo partial; exit 7"), (err: unknown) => {
        assert.ok(err instanceof CommandExitError);
        assert.equal(err.exitCode, 7);
        assert.equal(err.stdout, "partial\n");
        return true;
      });
    });

    test("runs as the default user in its home, or as root when asked", async () => {
      const asUser = await sbx.commands.run("whoami; pwd; echo $HOME");
      assert.equal(asUser.stdout, "user\n/home/user\n/home/user\n");
      const asRoot = await sbx.commands.run("whoami; id -u", { user: "root" });
      assert.equal(asRoot.stdout, "root\n0\n");
    });

    test("cwd and envs apply to one command and do not leak into the next", async () => {
      const result = await sbx.commands.run("pwd; echo $FOO", { cwd: "/tmp", envs: { FOO: "bar" } });
      assert.equal(result.stdout, "/tmp\nbar\n");
      const next = await sbx.commands.run('echo "[$FOO]"');
      assert.equal(next.stdout, "[]\n");
    });

    test("streams output through callbacks as it is produced", async () => {
      const chunks: string[] = [];
      await sbx.commands.run("for i in 1 2 3; do echo $i; sleep 0.05; done", {
        onStdout: (d) => chunks.push(d),
      });
      assert.equal(chunks.join(""), "1\n2\n3\n");
      assert.ok(chunks.length >= 2, `expected several chunks, got ${chunks.length}`);
    });

    test("the reported pid is a real pid and the process is listed while it runs", async () => {
      const handle = await sbx.commands.run("sleep 30", { background: true });
      try {
        const check = await sbx.commands.run(`kill -0 ${handle.pid} && echo alive`, { user: "root" });
        assert.equal(check.stdout, "alive\n");
        const listed = await sbx.commands.list();
        const entry = listed.find((p) => p.pid === handle.pid);
        assert.ok(entry, "background process is listed");
        assert.equal(entry.cmd, "/bin/bash");
        assert.deepEqual(entry.args, ["-l", "-c", "sleep 30"]);
      } finally {
        await sbx.commands.kill(handle.pid);
      }
    });

    test("kill ends a background command with a signal exit; killing again returns false", async () => {
      const handle = await sbx.commands.run("sleep 30", { background: true });
      assert.equal(await sbx.commands.kill(handle.pid), true);
      await assert.rejects(handle.wait(), (err: unknown) => {
        assert.ok(err instanceof CommandExitError);
        assert.equal(err.exitCode, -1);
        return true;
      });
      assert.equal(await sbx.commands.kill(handle.pid), false);
      const listed = await sbx.commands.list();
      assert.equal(
        listed.find((p) => p.pid === handle.pid),
        undefined,
      );
    });

    test("kill reaches the whole process tree of a command", async () => {
      const handle = await sbx.commands.run("sleep 31 | cat", { background: true });
      await new Promise((r) => setTimeout(r, 200));
      await sbx.commands.kill(handle.pid);
      await handle.wait().catch(() => undefined);
      const left = await sbx.commands.run("pgrep -fx 'sleep 31' || true");
      assert.equal(left.stdout, "");
    });

    test("stdin: send input, then close it so the command sees EOF", async () => {
      const handle = await sbx.commands.run("cat", { background: true, stdin: true });
      await sbx.commands.sendStdin(handle.pid, "hello ");
      await sbx.commands.sendStdin(handle.pid, "world");
      await sbx.commands.closeStdin(handle.pid);
      const result = await handle.wait();
      assert.equal(result.stdout, "hello world");
    });

    test("stdin is closed unless asked for: sending input fails", async () => {
      const handle = await sbx.commands.run("sleep 30", { background: true });
      try {
        await assert.rejects(sbx.commands.sendStdin(handle.pid, "x"));
      } finally {
        await sbx.commands.kill(handle.pid);
      }
    });

    test("connect attaches to a running command and sees its later output and exit", async () => {
      const handle = await sbx.commands.run("sleep 0.5; echo late; exit 3", { background: true });
      await handle.disconnect();
      const seen: string[] = [];
      const attached = await sbx.commands.connect(handle.pid, { onStdout: (d) => seen.push(d) });
      await assert.rejects(
        attached.wait(),
        (err: unknown) => err instanceof CommandExitError && err.exitCode === 3,
      );
      assert.equal(seen.join(""), "late\n");
    });

    test("connect to an unknown pid fails with not found", async () => {
      await assert.rejects(sbx.commands.connect(999_999), /not found/i);
    });

    test("a command outlives the request that started it (disconnect leaves it running)", async () => {
      const handle = await sbx.commands.run("sleep 0.3; touch /tmp/moat-test-outlived", { background: true });
      await handle.disconnect();
      await new Promise((r) => setTimeout(r, 800));
      const check = await sbx.commands.run(
        "test -f /tmp/moat-test-outlived && echo yes; rm -f /tmp/moat-test-outlived",
      );
      assert.equal(check.stdout, "yes\n");
    });

    test("timeoutMs bounds the command's life: it is killed and the call fails", async () => {
      const started = Date.now();
      await assert.rejects(sbx.commands.run("sleep 20; echo never", { timeoutMs: 500 }), /timeout|deadline/i);
      assert.ok(Date.now() - started < 5000);
      const left = await sbx.commands.run("pgrep -fx 'sleep 20' || true");
      assert.equal(left.stdout, "");
    });

    test("a missing cwd is an invalid argument", async () => {
      await assert.rejects(sbx.commands.run("true", { cwd: "/no/such/dir" }), /cwd/);
    });

    test("large output arrives complete", async () => {
      const result = await sbx.commands.run("head -c 3000000 /dev/zero | tr '\\0' 'a'");
      assert.equal(result.stdout.length, 3_000_000);
    });

    test("bad input gets Connect errors and envd stays up", async () => {
      const rpc = (method: string, body: string, contentType = "application/json") =>
        fetch(`${ENVD_URL}/process.Process/${method}`, {
          method: "POST",
          headers: { "content-type": contentType, "connect-protocol-version": "1" },
          body,
        });
      let res = await rpc("SendInput", "{not json");
      assert.equal(res.status, 400);
      assert.equal(((await res.json()) as { code: string }).code, "invalid_argument");

      res = await rpc("SendInput", JSON.stringify({ process: { pid: "abc" } }));
      assert.equal(res.status, 400);

      res = await rpc("SendSignal", JSON.stringify({ process: { pid: 999999 }, signal: "SIGNAL_SIGKILL" }));
      assert.equal(res.status, 404);
      assert.equal(((await res.json()) as { code: string }).code, "not_found");

      res = await rpc("SendSignal", JSON.stringify({ process: {}, signal: "SIGNAL_SIGKILL" }));
      assert.equal(res.status, 400);

      res = await rpc("Update", JSON.stringify({ process: { pid: 1 }, pty: { size: { cols: 1, rows: 1 } } }));
      assert.equal(res.status, 404);

      res = await rpc("NoSuchMethod", "{}");
      assert.equal(res.status, 404);

      const health = await fetch(`${ENVD_URL}/health`);
      assert.equal(health.status, 204);
    });
  });
