import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { readFile } from "node:fs/promises";
import { test } from "node:test";
import { killOwnedProcess, processAlive, waitForExit } from "../src/host/process.js";

test("a running child is alive; waitForExit returns once it has exited", async () => {
  const child = spawn("sleep", ["0.3"]);
  const pid = child.pid!;
  assert.equal(await processAlive(pid), true);
  const started = Date.now();
  await waitForExit(pid, 10_000);
  assert.ok(Date.now() - started < 5_000, "waitForExit returned well before its timeout");
  assert.equal(await processAlive(pid), false);
  await new Promise((r) => (child.exitCode === null ? child.once("exit", r) : r(undefined)));
});

test("waitForExit gives up after its timeout while the process lives", async () => {
  const child = spawn("sleep", ["30"]);
  try {
    const started = Date.now();
    await waitForExit(child.pid!, 100);
    assert.ok(Date.now() - started >= 100);
    assert.equal(await processAlive(child.pid!), true);
  } finally {
    child.kill();
  }
});

test("a pid that does not exist is not alive", async () => {
  // Above pid_max no process can exist.
  const max = Number(await readFile("/proc/sys/kernel/pid_max", "utf8"));
  assert.equal(await processAlive(max + 1), false);
  assert.equal(await processAlive(0), false);
  assert.equal(await processAlive(-1), false);
  await waitForExit(max + 1, 10_000);
});

test("killOwnedProcess signals only a process whose command line holds the mark", async () => {
  // A stand-in for a runsc sandbox process: its container id is an argument.
  const child = spawn(process.execPath, ["-e", "setTimeout(() => {}, 30_000)", "moat-abc-123"]);
  try {
    // A pid reused by another process (another mark, a prefix of it): left alone.
    assert.equal(await killOwnedProcess(child.pid!, "moat-abc-456"), false);
    assert.equal(await killOwnedProcess(child.pid!, "moat-abc"), false);
    assert.equal(await killOwnedProcess(child.pid!, ""), false);
    assert.equal(await processAlive(child.pid!), true);
    // Pids that signal a group or every process, and none at all: never signalled.
    for (const pid of [0, -1, -child.pid!, Number.NaN, 1.5])
      assert.equal(await killOwnedProcess(pid, "moat-abc-123"), false);
    assert.equal(await processAlive(child.pid!), true);
    assert.equal(await killOwnedProcess(child.pid!, "moat-abc-123"), true);
    await waitForExit(child.pid!, 5_000);
    assert.equal(await processAlive(child.pid!), false);
  } finally {
    child.kill("SIGKILL");
  }
});
