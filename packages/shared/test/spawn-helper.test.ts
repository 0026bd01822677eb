/**
 * runCommand through the spawn helper answers exactly as a command of this process's own: output,
 * exit codes, input, environment, working directory, timeouts, aborts, streamed output, an output
 * file; and a helper that dies fails the commands it had and leaves the next ones to this process.
 */
import assert from "node:assert/strict";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import { CommandError, runCommand, useSpawnHelper } from "@moat/shared";

/** The pid of the process that started the command. */
async function parentOfCommand(): Promise<number> {
  return Number((await runCommand(["sh", "-c", "echo $PPID"])).stdout.trim());
}

describe("runCommand through the spawn helper", () => {
  let release: () => void;
  let dir: string;
  const gone: string[] = [];

  before(async () => {
    dir = await mkdtemp(path.join(tmpdir(), "moat-test-spawn-"));
    release = useSpawnHelper((why) => gone.push(why));
  });
  after(async () => {
    release();
    await rm(dir, { recursive: true, force: true });
  });

  test("commands are the helper's children, not this process's", async () => {
    const parent = await parentOfCommand();
    assert.notEqual(parent, process.pid);
    assert.ok(parent > 1);
  });

  test("output, exit codes, okCodes, input, env and cwd", async () => {
    const ok = await runCommand(["sh", "-c", 'cat; echo "$MOAT_X" >&2; pwd'], {
      input: "from stdin\n",
      env: { ...process.env, MOAT_X: "the env" },
      cwd: dir,
    });
    assert.equal(ok.stdout, `from stdin\n${dir}\n`);
    assert.equal(ok.stderr, "the env\n");
    assert.equal(ok.exitCode, 0);
    const allowed = await runCommand(["sh", "-c", "exit 3"], { okCodes: [3] });
    assert.equal(allowed.exitCode, 3);
    await assert.rejects(runCommand(["sh", "-c", "echo why >&2; exit 4"]), (err: unknown) => {
      assert.ok(err instanceof CommandError);
      assert.equal(err.exitCode, 4);
      assert.equal(err.stderrTail, "why\n");
      return true;
    });
    await assert.rejects(runCommand(["/nonexistent/moat-command"]), (err: unknown) => {
      assert.ok(err instanceof CommandError);
      assert.match(err.message, /ENOENT/);
      return true;
    });
    // What no process can be given is a CommandError, and the helper lives on for the next.
    const helperPID = await parentOfCommand();
    for (const bad of [["echo", "a\0b"], ["\0"]]) {
      await assert.rejects(runCommand(bad), (err: unknown) => err instanceof CommandError);
    }
    await assert.rejects(
      runCommand(["true"], { env: { PATH: process.env.PATH, X: "a\0b" } }),
      (err: unknown) => err instanceof CommandError,
    );
    assert.equal(await parentOfCommand(), helperPID, "the same helper starts the next command");
    // Binary-safe stdout, larger than one pipe read.
    const big = await runCommand(["head", "-c", "3000000", "/dev/zero"]);
    assert.equal(big.stdout.length, 3_000_000);
  });

  test("a timeout and an abort kill the command", async () => {
    const started = Date.now();
    await assert.rejects(runCommand(["sleep", "30"], { timeoutMs: 200 }), (err: unknown) => {
      assert.ok(err instanceof CommandError);
      assert.equal(err.timedOut, true);
      assert.equal(err.signal, "SIGKILL");
      return true;
    });
    const abort = new AbortController();
    setTimeout(() => abort.abort(), 200);
    await assert.rejects(runCommand(["sleep", "30"], { signal: abort.signal }), (err: unknown) => {
      assert.ok(err instanceof CommandError);
      assert.equal(err.signal, "SIGKILL");
      return true;
    });
    assert.ok(Date.now() - started < 5000, "both ended well before the sleeps would");
  });

  test("output streams to onOutput as it comes; outputFile takes it instead", async () => {
    const chunks: string[] = [];
    await runCommand(["sh", "-c", "echo one; sleep 0.2; echo two >&2"], {
      onOutput: (chunk, stream) => chunks.push(`${stream}:${chunk}`),
    });
    assert.deepEqual(chunks, ["stdout:one\n", "stderr:two\n"]);
    const file = path.join(dir, "out.log");
    const r = await runCommand(["sh", "-c", "echo to-file; echo err-to-file >&2"], { outputFile: file });
    assert.equal(r.stdout, "");
    assert.equal(await readFile(file, "utf8"), "to-file\nerr-to-file\n");
  });

  test("a helper that dies fails its commands; the next ones run here", async () => {
    const helperPID = await parentOfCommand();
    const pending = runCommand(["sleep", "30"]);
    await new Promise((r) => setTimeout(r, 200));
    process.kill(helperPID, "SIGKILL");
    await assert.rejects(pending, /spawn helper exited/);
    assert.equal(gone.length, 1);
    assert.equal(await parentOfCommand(), process.pid);
  });
});
