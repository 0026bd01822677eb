/**
 * The code interpreter across gVisor checkpoints: sandboxes restored from the template snapshot
 * (the default kernel started before the snapshot) and from the warm pool run code at once, and
 * a kernel's state survives pause and resume. On a failure the sandbox's code-interpreter log is
 * printed.
 */
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { Sandbox } from "@e2b/code-interpreter";
import { waitFor } from "../helpers/counter.js";
import { type RunningMoat, startMoat, useMoat } from "../helpers/moat-up.js";

async function withLog<T>(sbx: Sandbox, fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (err) {
    const log = await sbx.commands
      .run("tail -n 40 /tmp/.moat-code-interpreter.log; ps -eo pid,ppid,etime,args | cut -c1-120", {
        user: "root",
      })
      .then((r) => r.stdout)
      .catch((e: Error) => `(no log: ${e.message})`);
    process.stderr.write(`--- code-interpreter log of ${sbx.sandboxId}:\n${log}\n`);
    throw err;
  }
}

describe("code interpreter across snapshots, the warm pool and pause/resume", { timeout: 900_000 }, () => {
  let moat: RunningMoat;
  // Every fill, refills included (those are said at debug).
  const poolFills = () => moat.log().split("warm pool full").length - 1;

  before(async () => {
    moat = await startMoat({ codeInterpreter: true, env: { MOAT_POOL_SIZE: "1", MOAT_LOG_LEVEL: "debug" } });
    useMoat(moat);
    await waitFor(() => poolFills() >= 2, "the base and code-interpreter pools", 300_000);
  });

  after(async () => {
    await moat?.cleanup();
  });

  test("a create from the warm pool answers its first runCode from the kernel started in the snapshot", async () => {
    const sbx = await Sandbox.create({ timeoutMs: 120_000 });
    try {
      const ex = await withLog(sbx, () => sbx.runCode("import sys; 'numpy' in sys.modules, 1 + 1"));
      assert.equal(ex.error, undefined, ex.error?.traceback);
      assert.match(ex.text ?? "", /2\)$/);
      const start = await sbx.commands.run("ps -o etimes= -C ipykernel_launcher || ps -eo etimes,args");
      assert.ok(start.stdout.length > 0);
    } finally {
      await sbx.kill();
    }
  });

  test("a create restored from the snapshot with the pool empty runs code", async () => {
    const fills = poolFills();
    // The first takes the pool's entry; the second is restored while the pool refills.
    const a = await Sandbox.create({ timeoutMs: 120_000 });
    const b = await Sandbox.create({ timeoutMs: 120_000 });
    try {
      for (const sbx of [a, b]) {
        const ex = await withLog(sbx, () => sbx.runCode("40 + 2"));
        assert.equal(ex.text, "42");
      }
    } finally {
      await Promise.all([a.kill(), b.kill()]);
    }
    await waitFor(() => poolFills() > fills, "the pool to refill", 120_000);
  });

  test("kernel state survives pause and resume", async () => {
    const sbx = await Sandbox.create({ timeoutMs: 300_000 });
    await withLog(sbx, () => sbx.runCode("kept = [1, 2, 3]"));
    const paused = await sbx.pause().catch((err: Error) => {
      process.stderr.write(`--- moat's log:\n${moat.log().slice(-6000)}\n`);
      throw err;
    });
    assert.equal(paused, true);
    const resumed = await Sandbox.connect(sbx.sandboxId);
    try {
      const ex = await withLog(resumed, () => resumed.runCode("sum(kept)"));
      assert.equal(ex.text, "6", JSON.stringify(ex.toJSON()));
      assert.equal(await resumed.pause(), true, "and a second cycle");
      const again = await Sandbox.connect(sbx.sandboxId);
      assert.equal((await withLog(again, () => again.runCode("kept.append(4); sum(kept)"))).text, "10");
    } finally {
      await resumed.kill();
    }
  });
});
