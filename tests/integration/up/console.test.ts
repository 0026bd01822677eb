/**
 * moat up's console, read the way an operator's terminal or log shipper reads it: JSON lines with
 * `component` once when not on a terminal, pretty lines when asked, one line per event (a sandbox's
 * create and stop said once, the warm pool's state once per change, not per refill), and a start
 * that cannot succeed ending at once with one line saying what to change, a closed terminal
 * stopping it as cleanly as Ctrl-C.
 */
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { once } from "node:events";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import { fileURLToPath } from "node:url";
import { Sandbox } from "e2b";
import { waitFor } from "../helpers/counter.js";
import { type RunningMoat, startMoat, useMoat } from "../helpers/moat-up.js";
import { freePort } from "../helpers/orchestrator.js";

const moatBin = path.resolve(
  path.dirname(fileURLToPath(import.meta.url)),
  "../../../packages/cli/bin/moat.js",
);

/** Runs `moat up <args>` expected to fail fast; its exit code, output and how long it took. */
async function failingUp(args: string[], env: Record<string, string> = {}) {
  const dataDir = await mkdtemp(path.join(tmpdir(), "moattest-console-"));
  const started = Date.now();
  const child = spawn(process.execPath, [moatBin, "up", "--data-dir", path.join(dataDir, "data"), ...args], {
    stdio: ["ignore", "pipe", "pipe"],
    env: { ...process.env, ...env },
  });
  let output = "";
  child.stdout.on("data", (c: Buffer) => (output += c.toString()));
  child.stderr.on("data", (c: Buffer) => (output += c.toString()));
  const timer = setTimeout(() => child.kill("SIGKILL"), 30_000);
  const [code] = (await once(child, "exit")) as [number | null];
  clearTimeout(timer);
  await rm(dataDir, { recursive: true, force: true });
  return { code, output, ms: Date.now() - started };
}

describe("moat up's console", { timeout: 300_000 }, () => {
  let moat: RunningMoat;

  before(async () => {
    moat = await startMoat({ env: { MOAT_POOL_SIZE: "1" } });
    useMoat(moat);
  });

  after(async () => {
    await moat?.cleanup();
  });

  test("not on a terminal: JSON lines, each with its component once; few lines to 'moat is up'", () => {
    const log = moat.log();
    const upTo = log.slice(0, log.indexOf("moat is up"));
    const lines = upTo.split("\n").filter((l) => l.trim() !== "");
    // Setup lines (moat: …), listening lines, one for the migrations; no line per migration.
    assert.ok(lines.length <= 10, `${lines.length} lines before "moat is up":\n${upTo}`);
    for (const line of log.split("\n").filter((l) => l.startsWith("{"))) {
      const entry = JSON.parse(line) as Record<string, unknown>;
      assert.equal(typeof entry.component, "string", line);
      assert.equal(line.match(/"component":/g)?.length, 1, `component once: ${line}`);
      assert.ok((line.match(/"nodeID":/g)?.length ?? 0) <= 1, `nodeID once: ${line}`);
    }
    assert.equal(log.match(/"msg":"database migrated"/g)?.length, 1, log);
  });

  test("a sandbox's create and kill are one line each; the pool's refills say nothing", async () => {
    await waitFor(() => /"msg":"warm pool full"/.test(moat.log()), "the warm pool", 120_000);
    const ids: string[] = [];
    for (let i = 0; i < 2; i++) {
      const sbx = await Sandbox.create("base", { timeoutMs: 60_000 });
      ids.push(sbx.sandboxId);
      await sbx.kill();
    }
    const from = moat.log().length;
    // The pool refills after each claim: time for the second refill to be said, were it said.
    await new Promise((r) => setTimeout(r, 8_000));
    const log = moat.log();
    for (const id of ids) {
      const lines = log.split("\n").filter((l) => l.includes(id));
      assert.equal(lines.filter((l) => l.includes('"msg":"sandbox created"')).length, 1, lines.join("\n"));
      assert.equal(lines.filter((l) => l.includes('"msg":"sandbox stopped"')).length, 1, lines.join("\n"));
      assert.equal(lines.length, 2, `only the create and the stop:\n${lines.join("\n")}`);
    }
    assert.equal(
      log.match(/"templateID":"base"[^\n]*"msg":"warm pool full"/g)?.length,
      1,
      `"warm pool full" once, not after every refill:\n${log.slice(from)}`,
    );
  });

  test("a port in use: moat up ends within seconds naming the port and the flag, no stack trace", async () => {
    const apiPort = new URL(moat.env.E2B_API_URL!).port;
    const { code, output, ms } = await failingUp([
      "--api-port",
      apiPort,
      "--proxy-port",
      String(await freePort()),
      "--orchestrator-port",
      String(await freePort()),
    ]);
    assert.equal(code, 1, output);
    assert.match(output, new RegExp(`^moat: port ${apiPort} on 127\\.0\\.0\\.1 is in use .*--api-port\\n$`));
    assert.ok(ms < 15_000, `${ms} ms`);
  });

  test("a bad setting: one line naming the variable and what it takes", async () => {
    const { code, output } = await failingUp([], { MOAT_PROXY_MAX_CONNECTIONS: "lots" });
    assert.equal(code, 1, output);
    assert.equal(output, "moat: MOAT_PROXY_MAX_CONNECTIONS must be a whole number ≥ 0, got 'lots'\n");
  });

  test("SIGHUP (the terminal closed) stops moat up cleanly; MOAT_LOG_FORMAT=pretty: plain lines with the component, on a pipe too", async () => {
    const from = moat.log().length;
    await moat.restart({ signal: "SIGHUP", env: { MOAT_LOG_FORMAT: "pretty" } });
    assert.match(moat.log().slice(from), /^moat: SIGHUP: stopping [^\n]*\n(.*\n)*moat: stopped\n/m);
    const lines = moat
      .log()
      .slice(from)
      .split("\n")
      .filter((l) => l.trim() !== "");
    assert.ok(!lines.some((l) => l.startsWith("{")), lines.join("\n"));
    assert.ok(
      lines.some((l) =>
        /^\[\d\d:\d\d:\d\d\] INFO: orchestrator orchestrator listening nodeID=local port=\d+/.test(l),
      ),
      lines.join("\n"),
    );
    assert.ok(
      lines.some((l) => /INFO: orchestrator template prepared nodeID=local templateID=base /.test(l)),
      lines.join("\n"),
    );
    // The pool filled before the end (a stop while it fills is not what this test is about).
    await waitFor(
      () => /INFO: orchestrator warm pool full/.test(moat.log().slice(from)),
      "the warm pool",
      120_000,
    );
  });
});
