/**
 * Reading files that change while they are read, through the client proxy with the unmodified SDK
 * against `moat up`: a file a process keeps rewriting, a log a process keeps appending to, and
 * both across pause/resume cycles. Every read must answer within a second with a state the file
 * really had. The writers make that checkable: each rewrite is one complete record carrying its
 * own checksum (a valid read is empty or one whole record), and the log holds numbered lines (a
 * valid read is lines 0..n in order, then at most a beginning of line n+1).
 */
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { after, before, describe, test } from "node:test";
import { Sandbox } from "e2b";
import { type RunningMoat, startMoat, useMoat } from "../helpers/moat-up.js";

const RECORD = "/home/user/record.txt";
const LOG = "/home/user/log.txt";
const SLOW_MS = 1000;

/** Rewrites RECORD every 2 ms with `open(…, "w").write(…)`: id, a payload of varying length, its sha256. */
const REWRITER = `
import hashlib, time
i = 0
while True:
    body = "%d:%s" % (i, "r" * ((i * 37) % 3000))
    open(${JSON.stringify(RECORD)}, "w").write("%s:%s\\n" % (body, hashlib.sha256(body.encode()).hexdigest()))
    i += 1
    time.sleep(0.002)
`;

/** Appends numbered lines to LOG every 3 ms, one write(2) per line. */
const APPENDER = `
import os, time
fd = os.open(${JSON.stringify(LOG)}, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o644)
n = 0
while True:
    os.write(fd, ("%d %s\\n" % (n, "x" * (n % 20))).encode())
    n += 1
    time.sleep(0.003)
`;

function logLine(n: number): string {
  return `${n} ${"x".repeat(n % 20)}`;
}

/** Whether `text` is a state RECORD really had: empty, or one complete record with a good checksum. */
function validRecord(text: string): boolean {
  if (text === "") return true;
  const match = /^(\d+:r*):([0-9a-f]{64})\n$/.exec(text);
  return match !== null && createHash("sha256").update(match[1]!).digest("hex") === match[2];
}

/** Whether `text` is a state LOG really had: lines 0..n in order, then at most a prefix of line n+1. */
function validLog(text: string): boolean {
  const lines = text.split("\n");
  const partial = lines.pop()!;
  for (const [i, line] of lines.entries()) if (line !== logLine(i)) return false;
  return logLine(lines.length).startsWith(partial);
}

interface Figures {
  latencies: number[];
  invalid: string[];
}

function summary(name: string, { latencies }: Figures): string {
  const sorted = [...latencies].sort((a, b) => a - b);
  const at = (q: number) => sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))]!.toFixed(0);
  return `${name}: ${sorted.length} reads, p50 ${at(0.5)} ms, p99 ${at(0.99)} ms, max ${at(1)} ms`;
}

/** Reads `file` once, timing it and checking what came back. */
async function readChecked(sbx: Sandbox, file: string, valid: (text: string) => boolean, into: Figures) {
  const started = performance.now();
  let text: string;
  try {
    // The SDK would wait a minute for a hung answer; give up well past the bound instead.
    text = await sbx.files.read(file, { requestTimeoutMs: 10_000 });
  } catch (err) {
    throw new Error(
      `read ${into.latencies.length + 1} of ${file} failed after ${(performance.now() - started).toFixed(0)} ms: ${err}`,
    );
  }
  into.latencies.push(performance.now() - started);
  if (!valid(text))
    into.invalid.push(text.length > 200 ? `${text.slice(0, 200)}… (${text.length} chars)` : text);
}

function assertFigures(name: string, figures: Figures): void {
  assert.deepEqual(figures.invalid, [], `${name}: reads that match no state the file had`);
  const slow = figures.latencies.filter((ms) => ms > SLOW_MS);
  assert.deepEqual(
    slow.map((ms) => Math.round(ms)),
    [],
    `${name}: reads slower than ${SLOW_MS} ms (${summary(name, figures)})`,
  );
}

describe("moat up: reading files that change while they are read", { timeout: 1_200_000 }, () => {
  let moat: RunningMoat;
  let sbx: Sandbox;

  before(async () => {
    moat = await startMoat();
    useMoat(moat);
    sbx = await Sandbox.create("base", { timeoutMs: 1_200_000 });
    await sbx.files.write("/home/user/rewriter.py", REWRITER);
    await sbx.files.write("/home/user/appender.py", APPENDER);
    await sbx.commands.run("(python3 rewriter.py & python3 appender.py &) >/dev/null 2>&1");
    // Both writers are going before any read.
    await sbx.commands.run(`while [ ! -s ${RECORD} ] || [ ! -s ${LOG} ]; do sleep 0.05; done`, {
      timeoutMs: 30_000,
    });
  });

  after(async () => {
    await moat?.cleanup();
  });

  test("the checks tell real states from torn ones", () => {
    assert.ok(validRecord(""));
    assert.ok(validRecord(`1:r:${createHash("sha256").update("1:r").digest("hex")}\n`));
    assert.ok(!validRecord(`1:r:${createHash("sha256").update("1:rr").digest("hex")}\n`));
    assert.ok(!validRecord(`1:r:${createHash("sha256").update("1:r").digest("hex")}\nrrr`));
    assert.ok(validLog(""));
    assert.ok(validLog(`${logLine(0)}\n${logLine(1)}\n${logLine(2).slice(0, 2)}`));
    assert.ok(!validLog(`${logLine(0)}\n${logLine(2)}\n`));
    assert.ok(!validLog(`${logLine(0)}\nzz`));
  });

  test("1,000 reads of a file being rewritten", async (t) => {
    const figures: Figures = { latencies: [], invalid: [] };
    for (let i = 0; i < 1000; i++) await readChecked(sbx, RECORD, validRecord, figures);
    t.diagnostic(summary("rewritten file", figures));
    assertFigures("rewritten file", figures);
  });

  test("1,000 reads of a file being appended to", async (t) => {
    const figures: Figures = { latencies: [], invalid: [] };
    for (let i = 0; i < 1000; i++) await readChecked(sbx, LOG, validLog, figures);
    t.diagnostic(summary("appended file", figures));
    assertFigures("appended file", figures);
  });

  test("200 pause/resume cycles with the writers running, both files read after each", async (t) => {
    const record: Figures = { latencies: [], invalid: [] };
    const log: Figures = { latencies: [], invalid: [] };
    const pauses: number[] = [];
    const resumes: number[] = [];
    let current = sbx;
    const linesBefore = (await current.files.read(LOG)).split("\n").length;
    for (let cycle = 0; cycle < 200; cycle++) {
      const from = moat.log().length;
      try {
        let started = performance.now();
        assert.equal(await current.pause(), true, `cycle ${cycle}: pause`);
        pauses.push(performance.now() - started);
        started = performance.now();
        current = await Sandbox.connect(current.sandboxId);
        resumes.push(performance.now() - started);
        await readChecked(current, RECORD, validRecord, record);
        await readChecked(current, LOG, validLog, log);
      } catch (err) {
        // What moat said meanwhile: its warnings and errors since this cycle began.
        const said = moat
          .log()
          .slice(from)
          .split("\n")
          .filter((l) => /"level":(40|50|60)|WARN|ERROR/.test(l));
        throw new Error(`cycle ${cycle}: ${err}\nmoat's warnings:\n${said.join("\n").slice(-8000)}`);
      }
    }
    const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!.toFixed(0);
    t.diagnostic(summary("rewritten file across pauses", record));
    t.diagnostic(summary("appended file across pauses", log));
    t.diagnostic(
      `pause p50 ${median(pauses)} ms, max ${Math.max(...pauses).toFixed(0)} ms; ` +
        `resume p50 ${median(resumes)} ms, max ${Math.max(...resumes).toFixed(0)} ms`,
    );
    assertFigures("rewritten file across pauses", record);
    assertFigures("appended file across pauses", log);
    // The writers ran on through the cycles: the log kept growing.
    const linesAfter = (await current.files.read(LOG)).split("\n").length;
    assert.ok(
      linesAfter > linesBefore + 1000,
      `the appender kept writing (${linesBefore} → ${linesAfter} lines)`,
    );
  });
});
