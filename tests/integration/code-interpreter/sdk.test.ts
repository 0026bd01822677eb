/**
 * The code interpreter end to end: the unmodified `@e2b/code-interpreter` SDK against `moat up`,
 * its default template `code-interpreter-v1` built by moat itself (into the cache by `moat setup`
 * the first time), the server on port 49999 reached through the client proxy.
 */
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { NotFoundError, Sandbox, TimeoutError } from "@e2b/code-interpreter";
import { type RunningMoat, startMoat, useMoat } from "../helpers/moat-up.js";

const JUPYTER_PORT = "49999";

/** A raw request to a sandbox's code interpreter through the proxy (what the SDK does, or worse). */
async function raw(
  moat: RunningMoat,
  sbx: Sandbox,
  method: string,
  path: string,
  body?: string,
): Promise<{ status: number; text: string }> {
  const res = await fetch(`${moat.env.E2B_SANDBOX_URL}${path}`, {
    method,
    headers: {
      "content-type": "application/json",
      "e2b-sandbox-id": sbx.sandboxId,
      "e2b-sandbox-port": JUPYTER_PORT,
    },
    body,
  });
  return { status: res.status, text: await res.text() };
}

async function until<T>(what: string, fn: () => Promise<T>, ms = 30_000): Promise<T> {
  const deadline = Date.now() + ms;
  let last: unknown;
  while (Date.now() < deadline) {
    try {
      return await fn();
    } catch (err) {
      last = err;
      await new Promise((r) => setTimeout(r, 250));
    }
  }
  throw new Error(`${what} within ${ms} ms: ${(last as Error)?.message ?? last}`);
}

describe("code interpreter: @e2b/code-interpreter against moat up", { timeout: 1_800_000 }, () => {
  let moat: RunningMoat;
  let sbx: Sandbox;

  before(async () => {
    moat = await startMoat({ codeInterpreter: true });
    useMoat(moat);
    sbx = await Sandbox.create({ timeoutMs: 600_000 });
  });

  after(async () => {
    await sbx?.kill().catch(() => undefined);
    await moat?.cleanup();
  });

  test("Sandbox.create() gets code-interpreter-v1; runCode returns results, logs and the execution count", async () => {
    const first = await sbx.runCode("1 + 1");
    assert.equal(first.text, "2");
    assert.equal(first.error, undefined);
    assert.equal(typeof first.executionCount, "number");
    const stdout: string[] = [];
    const stderr: string[] = [];
    const ex = await sbx.runCode('import sys\nprint("out")\nprint("err", file=sys.stderr)\n"done"', {
      onStdout: (m) => {
        stdout.push(m.line);
      },
      onStderr: (m) => {
        stderr.push(m.line);
      },
    });
    assert.deepEqual(stdout, ["out\n"]);
    assert.deepEqual(stderr, ["err\n"]);
    assert.deepEqual(ex.logs, { stdout: ["out\n"], stderr: ["err\n"] });
    assert.equal(ex.text, "'done'");
    assert.equal(ex.executionCount, first.executionCount! + 1);
  });

  test("state persists between executions; errors come back with name, value and traceback", async () => {
    await sbx.runCode("counter = 41");
    assert.equal((await sbx.runCode("counter += 1\ncounter")).text, "42");
    const errors: string[] = [];
    const failed = await sbx.runCode("1 / 0", { onError: (e) => void errors.push(e.name) });
    assert.equal(failed.error?.name, "ZeroDivisionError");
    assert.equal(failed.error?.value, "division by zero");
    assert.match(failed.error?.traceback ?? "", /ZeroDivisionError/);
    assert.deepEqual(errors, ["ZeroDivisionError"]);
    assert.equal((await sbx.runCode("counter")).text, "42", "an error keeps the state");
    const again = await Sandbox.connect(sbx.sandboxId);
    assert.equal((await again.runCode("counter")).text, "42", "Sandbox.connect reaches the same kernel");
  });

  test("display data: a matplotlib figure is a PNG, a DataFrame has text and HTML", async () => {
    const plot = await sbx.runCode(
      "import matplotlib.pyplot as plt\nplt.plot([1, 2, 3], [4, 1, 9])\nplt.title('t')\nplt.show()",
    );
    assert.equal(plot.error, undefined, plot.error?.traceback);
    const figure = plot.results.find((r) => r.png);
    assert.ok(figure, `a PNG result: ${JSON.stringify(plot.results.map((r) => r.formats()))}`);
    assert.equal(figure.isMainResult, false);
    assert.equal(Buffer.from(figure.png!, "base64").subarray(1, 4).toString(), "PNG");
    const frame = await sbx.runCode("import pandas as pd\npd.DataFrame({'a': [1, 2], 'b': [3, 4]})");
    assert.equal(frame.error, undefined, frame.error?.traceback);
    assert.match(frame.results[0]?.html ?? "", /<table/);
    assert.match(frame.text ?? "", /a\s+b/);
    const html = await sbx.runCode("from IPython.display import HTML, display\ndisplay(HTML('<b>hi</b>'))");
    assert.equal(html.results[0]?.html, "<b>hi</b>");
  });

  test("charts: matplotlib figures come with E2B's structured chart of each kind", async () => {
    const chartOf = async (code: string) => {
      const ex = await sbx.runCode(`import matplotlib.pyplot as plt\n${code}\nplt.show()`);
      assert.equal(ex.error, undefined, ex.error?.traceback);
      const result = ex.results.find((r) => r.chart);
      assert.ok(result?.png, "the PNG as well");
      return result!.chart as unknown as Record<string, unknown> & { elements: Record<string, unknown>[] };
    };
    const line = await chartOf(
      "plt.plot([1, 2, 3], [4, 5, 6], label='a')\nplt.xlabel('Time (s)')\nplt.title('line')",
    );
    assert.equal(line.type, "line");
    assert.equal(line.title, "line");
    assert.equal(line.x_unit, "s");
    assert.deepEqual(line.elements, [
      {
        label: "a",
        points: [
          [1, 4],
          [2, 5],
          [3, 6],
        ],
      },
    ]);
    const scatter = await chartOf("plt.scatter([1, 2], [3, 4], label='s')");
    assert.equal(scatter.type, "scatter");
    assert.deepEqual(scatter.elements[0]?.points, [
      [1, 3],
      [2, 4],
    ]);
    const bar = await chartOf("plt.bar(['x', 'y'], [1, 2], label='g')");
    assert.equal(bar.type, "bar");
    assert.deepEqual(bar.elements, [
      { label: "x", value: "1", group: "g" },
      { label: "y", value: "2", group: "g" },
    ]);
    const pie = await chartOf("plt.pie([1, 1], labels=['a', 'b'])");
    assert.equal(pie.type, "pie");
    assert.deepEqual(
      pie.elements.map((e) => [e.label, Math.round(e.angle as number)]),
      [
        ["a", 180],
        ["b", 180],
      ],
    );
    const box = await chartOf("plt.boxplot([[1, 2, 3, 4, 5, 20]], labels=['A'])");
    assert.equal(box.type, "box_and_whisker");
    assert.deepEqual(box.elements[0], {
      label: "A",
      min: 1,
      first_quartile: 2.25,
      median: 3.5,
      third_quartile: 4.75,
      max: 5,
      outliers: [20],
    });
    const superchart = await chartOf(
      "fig, (a, b) = plt.subplots(1, 2)\na.plot([1, 2], [2, 1])\nb.bar(['x'], [3])\nfig.suptitle('both')",
    );
    assert.equal(superchart.type, "superchart");
    assert.equal(superchart.title, "both");
    assert.deepEqual(
      superchart.elements.map((e) => e.type),
      ["line", "bar"],
    );
    const frame = await sbx.runCode("import pandas as pd\npd.DataFrame({'a': [1, None], 'b': ['x', 'y']})");
    assert.deepEqual(frame.results[0]?.data, { a: [1, null], b: ["x", "y"] });
  });

  test("contexts: own cwd and state, listed, restarted, removed", async () => {
    const ctx = await sbx.createCodeContext({ cwd: "/tmp" });
    assert.equal(ctx.language, "python");
    assert.equal(ctx.cwd, "/tmp");
    assert.equal((await sbx.runCode("import os; os.getcwd()", { context: ctx })).text, "'/tmp'");
    assert.equal(
      (await sbx.runCode("import os; os.getcwd()")).text,
      "'/home/user'",
      "the default context's cwd",
    );
    await sbx.runCode("mine = 7", { context: ctx });
    const missing = await sbx.runCode("mine");
    assert.equal(missing.error?.name, "NameError", "contexts do not share state");
    const listed = await sbx.listCodeContexts();
    assert.ok(listed.some((c) => c.id === ctx.id && c.cwd === "/tmp"));
    assert.ok(
      listed.some((c) => c.language === "python" && c.cwd === "/home/user"),
      "the default context",
    );
    await sbx.restartCodeContext(ctx);
    assert.equal(
      (await sbx.runCode("mine", { context: ctx })).error?.name,
      "NameError",
      "a restart clears state",
    );
    assert.equal((await sbx.runCode("import os; os.getcwd()", { context: ctx })).text, "'/tmp'");
    await sbx.removeCodeContext(ctx.id);
    await assert.rejects(sbx.runCode("1", { context: ctx }), (err: Error) => {
      assert.ok(err instanceof NotFoundError, String(err));
      assert.match(err.message, /not found/);
      return true;
    });
  });

  test("R: contexts with their cwd, env vars and errors; languages without a kernel are refused", async () => {
    const r = await sbx.createCodeContext({ language: "r", cwd: "/tmp" });
    assert.equal(r.language, "r");
    assert.equal(r.cwd, "/tmp");
    const ex = await sbx.runCode('x <- 40 + 2\ncat(getwd(), "\\n")\nx', { context: r });
    assert.equal(ex.error, undefined, ex.error?.traceback);
    assert.deepEqual(ex.logs.stdout, ["/tmp \n"]);
    assert.equal(ex.results[0]?.text, "[1] 42");
    const byLanguage = await sbx.runCode('Sys.getenv("PER_RUN")', { language: "R", envs: { PER_RUN: "r" } });
    assert.equal(byLanguage.results[0]?.text, '[1] "r"');
    assert.equal((await sbx.runCode('Sys.getenv("PER_RUN")', { language: "r" })).results[0]?.text, '[1] ""');
    const failed = await sbx.runCode('stop("boom")', { context: r });
    assert.match(failed.error?.value ?? "", /boom/);
    const js = await raw(
      moat,
      sbx,
      "POST",
      "/execute",
      JSON.stringify({ code: "1", language: "javascript" }),
    );
    assert.equal(js.status, 400);
    assert.match(JSON.parse(js.text).message, /javascript kernel is not installed/);
  });

  test("env vars: the sandbox's, and per execution (restored afterwards)", async () => {
    const withEnv = await Sandbox.create({ envs: { SANDBOX_WIDE: "yes" }, timeoutMs: 120_000 });
    try {
      assert.equal((await withEnv.runCode("import os; os.environ.get('SANDBOX_WIDE')")).text, "'yes'");
      const once = await withEnv.runCode("import os; os.environ.get('PER_RUN')", { envs: { PER_RUN: "1" } });
      assert.equal(once.text, "'1'");
      assert.equal((await withEnv.runCode("import os; os.environ.get('PER_RUN')")).text, undefined);
      const overridden = await withEnv.runCode("import os; os.environ['SANDBOX_WIDE']", {
        envs: { SANDBOX_WIDE: "for now" },
      });
      assert.equal(overridden.text, "'for now'");
      assert.equal((await withEnv.runCode("import os; os.environ['SANDBOX_WIDE']")).text, "'yes'");
    } finally {
      await withEnv.kill();
    }
  });

  test("bad input: unknown context and language, malformed bodies give {code, message}", async () => {
    await assert.rejects(sbx.runCode("1", { language: "cobol" }), /400/);
    await assert.rejects(sbx.createCodeContext({ language: "cobol" }), /400/);
    const language = await raw(
      moat,
      sbx,
      "POST",
      "/execute",
      JSON.stringify({ code: "1", language: "cobol" }),
    );
    assert.equal(language.status, 400);
    assert.match(JSON.parse(language.text).message, /unknown language 'cobol'/);
    const unknown = await raw(
      moat,
      sbx,
      "POST",
      "/execute",
      JSON.stringify({ code: "1", context_id: "nope" }),
    );
    assert.equal(unknown.status, 404);
    assert.deepEqual(JSON.parse(unknown.text), { code: 404, message: "Context nope not found" });
    for (const body of [
      "{not json",
      "[]",
      JSON.stringify({ code: 5 }),
      JSON.stringify({ code: "1", env_vars: { "A B": "x" } }),
    ]) {
      const res = await raw(moat, sbx, "POST", "/execute", body);
      assert.equal(res.status, 400, `${body}: ${res.text}`);
      const parsed = JSON.parse(res.text) as { code: number; message: string };
      assert.equal(parsed.code, 400);
      assert.ok(parsed.message.length > 0);
    }
    const both = await raw(
      moat,
      sbx,
      "POST",
      "/execute",
      JSON.stringify({ code: "1", language: "python", context_id: "x" }),
    );
    assert.equal(both.status, 400);
    const cwd = await raw(moat, sbx, "POST", "/contexts", JSON.stringify({ cwd: "/no/such/dir" }));
    assert.equal(cwd.status, 400);
    assert.match(JSON.parse(cwd.text).message, /no\/such\/dir/);
    assert.equal((await raw(moat, sbx, "DELETE", "/contexts/nope")).status, 404);
    assert.equal((await raw(moat, sbx, "GET", "/health")).text, '"OK"');
    assert.equal((await sbx.runCode("1 + 1")).text, "2", "the server still answers");
  });

  test("a client timeout interrupts the kernel: the next execution runs at once", async () => {
    await assert.rejects(sbx.runCode("import time\ntime.sleep(60)", { timeoutMs: 2_000 }), TimeoutError);
    const started = Date.now();
    assert.equal((await sbx.runCode("'after'", { timeoutMs: 10_000 })).text, "'after'");
    assert.ok(Date.now() - started < 5_000, `the next execution waited ${Date.now() - started} ms`);
    assert.equal((await sbx.runCode("counter")).text, "42", "an interrupt keeps the state");
  });

  test("the server killed comes back within 30 s, with the kernels' state", async () => {
    await sbx.runCode("survivor = 'still here'");
    await sbx.commands.run("pkill -f 'code-interpreter.mjs [s]erve' || true", { user: "root" });
    const started = Date.now();
    const back = await until("the code interpreter answers again", () => sbx.runCode("survivor"));
    assert.equal(back.text, "'still here'");
    assert.ok(Date.now() - started < 30_000);
  });

  test("kernels killed (as killing every Jupyter process does) come back within 30 s, fresh", async () => {
    await sbx.runCode("marker = 1");
    const killed = await sbx.commands.run("pkill -e -f 'ipykernel_[l]auncher'", { user: "root" });
    assert.match(killed.stdout, /killed/);
    const back = await until("the code interpreter runs code again", async () => {
      const ex = await sbx.runCode("1 + 2");
      if (ex.text !== "3") throw new Error(JSON.stringify(ex.toJSON()));
      return ex;
    });
    assert.equal(back.text, "3");
    // An execution that meets the dead kernel before the server replaced it reports KernelDied;
    // the next ones run on the fresh kernel.
    await until("a fresh kernel", async () => {
      const ex = await sbx.runCode("marker");
      if (ex.error?.name !== "NameError") throw new Error(JSON.stringify(ex.toJSON()));
    });
  });

  test("a sandbox without public traffic: the SDK sends its token, others are refused", async () => {
    const closed = await Sandbox.create({ network: { allowPublicTraffic: false }, timeoutMs: 120_000 });
    try {
      assert.equal((await closed.runCode("6 * 7")).text, "42");
      const anonymous = await raw(moat, closed, "POST", "/execute", JSON.stringify({ code: "1" }));
      assert.equal(anonymous.status, 403, anonymous.text);
    } finally {
      await closed.kill();
    }
  });

  test("a sandbox killed mid-execution: a clear error, no hang", async () => {
    const doomed = await Sandbox.create({ timeoutMs: 120_000 });
    const running = doomed
      .runCode("import time\ntime.sleep(60)", { timeoutMs: 90_000 })
      .catch((err: Error) => err);
    await new Promise((r) => setTimeout(r, 1_000));
    await doomed.kill();
    const outcome = await running;
    assert.ok(outcome instanceof Error, "the execution fails");
    assert.match(outcome.message, /killed|timed out|terminated|closed/i);
  });
  test("100 MB of output: streamed in bounded pieces, the server and kernel still answer", async () => {
    const loud = await Sandbox.create({ timeoutMs: 300_000 });
    try {
      let received = 0;
      const big = await loud.runCode("print('x' * 100_000_000)", {
        timeoutMs: 240_000,
        onStdout: (m) => {
          received += m.line.length;
        },
      });
      assert.equal(big.error, undefined, big.error?.value);
      assert.equal(received, 100_000_001);
      assert.equal((await loud.runCode("1 + 1", { timeoutMs: 30_000 })).text, "2");
    } finally {
      await loud.kill();
    }
  });
});
