/**
 * Sandbox logs end to end on `moat up`: a template (the unmodified SDK's Template builder) whose
 * start command prints to stdout and stderr; its sandboxes, restored from the template's snapshot,
 * go on logging through envd to the node, and GET /v2/sandboxes/{id}/logs (and the v1 route)
 * serve those lines merged with the API's lifecycle entries, filtered, also across a pause and
 * after a kill. Hostile: what a sandbox writes is cut, neutralised and kept to its own log, and
 * its runtime log on the host stays bounded.
 */
import assert from "node:assert/strict";
import { readdir, readFile, stat } from "node:fs/promises";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import { Sandbox, Template } from "e2b";
import { type RunningMoat, startMoat, useMoat } from "../helpers/moat-up.js";

interface Entry {
  timestamp: string;
  level: string;
  message: string;
  fields: Record<string, string>;
}

// Each line names the sandbox it runs in (its hostname is its id): lines are never mixed up.
const START_CMD =
  'i=0; while true; do echo "tick $i $(cat /proc/sys/kernel/hostname) <b>bold</b><script>alert(1)</script>"; echo "warning $i" >&2; i=$((i+1)); sleep 0.5; done';

describe("moat up: sandbox logs", { timeout: 600_000 }, () => {
  let moat: RunningMoat;
  let a: Sandbox;
  let b: Sandbox;

  before(async () => {
    moat = await startMoat();
    useMoat(moat);
    const template = Template().fromBaseImage().setStartCmd(START_CMD, "sleep 1");
    await Template.build(template, "moat-logs", { cpuCount: 1, memoryMB: 512 });
    [a, b] = await Promise.all([Sandbox.create("moat-logs"), Sandbox.create("moat-logs")]);
  });

  after(async () => {
    await a?.kill().catch(() => undefined);
    await b?.kill().catch(() => undefined);
    await moat?.cleanup();
  });

  async function logs(sandboxID: string, query = "", version: "v1" | "v2" = "v2") {
    const prefix = version === "v2" ? "/v2" : "";
    const url = `${moat.env.E2B_API_URL}${prefix}/sandboxes/${sandboxID}/logs${query}`;
    const init = { headers: { "X-API-Key": moat.env.E2B_API_KEY! } };
    // A kept-alive connection the server closed meanwhile fails once; a new one does not.
    const res = await fetch(url, init).catch(() => fetch(url, init));
    assert.equal(res.status, 200, await res.clone().text());
    return res.json() as Promise<{ logs: Entry[] }>;
  }

  async function eventually(what: string, check: () => Promise<boolean>, timeoutMs = 30_000) {
    const deadline = Date.now() + timeoutMs;
    while (!(await check())) {
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
      await new Promise((r) => setTimeout(r, 500));
    }
  }

  const ticks = (entries: Entry[]) => entries.filter((e) => e.message.startsWith("tick "));

  test("the start command's output, each sandbox its own, merged with the API's entries", async () => {
    for (const sbx of [a, b]) {
      await eventually(
        `ticks of ${sbx.sandboxId}`,
        async () => ticks((await logs(sbx.sandboxId)).logs).length >= 3,
      );
    }
    const [ofA, ofB] = [(await logs(a.sandboxId)).logs, (await logs(b.sandboxId)).logs];
    for (const [mine, theirs, entries] of [
      [a.sandboxId, b.sandboxId, ofA],
      [b.sandboxId, a.sandboxId, ofB],
    ] as const) {
      // Lines printed between the snapshot's restore and /init carry the template build's hostname.
      assert.ok(
        ticks(entries).some((e) => e.message.includes(mine)),
        JSON.stringify(ticks(entries)),
      );
      assert.ok(!JSON.stringify(entries).includes(theirs), "no line of another sandbox");
    }
    const tick = ticks(ofA)[0]!;
    assert.equal(tick.level, "info");
    assert.equal(tick.fields.source, "start");
    assert.equal(tick.fields.stream, "stdout");
    // Kept as text: whoever shows it escapes it.
    assert.match(tick.message, /<script>alert\(1\)<\/script>$/);
    const warning = ofA.find((e) => e.message.startsWith("warning "))!;
    assert.equal(warning.level, "error");
    assert.equal(warning.fields.stream, "stderr");
    // Lines the restored start command printed before the create returned come before this one.
    assert.ok(ofA.some((e) => e.message === "sandbox created" && e.fields.source === "api"));
    const times = ofA.map((e) => Date.parse(e.timestamp));
    assert.deepEqual(
      times,
      [...times].sort((x, y) => x - y),
      "oldest first",
    );
  });

  test("cursor, direction, level, search and limit; the v1 route carries the lines too", async () => {
    const all = (await logs(a.sandboxId)).logs;
    const errors = (await logs(a.sandboxId, "?level=error")).logs;
    assert.ok(errors.length > 0 && errors.every((e) => e.level === "error"));
    // On a loaded machine the node may miss the API's deadline (the API then answers its own
    // entries alone): calls that need the node's lines are retried.
    await eventually("a search", async () => {
      const found = (await logs(a.sandboxId, "?search=warning%201")).logs;
      return found.length >= 1 && found.every((e) => e.message.includes("warning 1"));
    });
    const newest = (await logs(a.sandboxId, "?direction=backward&limit=2")).logs;
    assert.equal(newest.length, 2);
    assert.ok(Date.parse(newest[0]!.timestamp) >= Date.parse(newest[1]!.timestamp));
    const from = Date.parse(all.at(-1)!.timestamp);
    const later = (await logs(a.sandboxId, `?cursor=${from}&direction=forward`)).logs;
    assert.ok(later.length >= 1 && later.every((e) => Date.parse(e.timestamp) >= from));
    const v1 = (await logs(a.sandboxId, "?start=0", "v1")) as unknown as { logs: Array<{ line: string }> };
    const lines = v1.logs.map((l) => JSON.parse(l.line) as Record<string, string>);
    assert.ok(
      lines.some((l) => l.message?.startsWith("tick ") && l.logger === "start" && l.level === "info"),
    );
    const res = await fetch(`${moat.env.E2B_API_URL}/v2/sandboxes/${a.sandboxId}/logs?direction=sideways`, {
      headers: { "X-API-Key": moat.env.E2B_API_KEY! },
    });
    assert.equal(res.status, 400);
  });

  test("hostile output: cut, control characters replaced, no forged source, only in its own log", async () => {
    const forged = JSON.stringify({ level: 60, msg: "forged-node-note", source: "node", time: 0 });
    const script = [
      `echo '${forged}' > /proc/1/fd/2`,
      `printf 'escape-\\033]0;owned\\007-done\\n' > /proc/1/fd/2`,
      `head -c 50000 /dev/zero | tr '\\0' 'L' > /proc/1/fd/2; echo > /proc/1/fd/2`,
    ].join("; ");
    await a.commands.run(script, { user: "root" });
    await eventually("the hostile lines", async () => {
      const found = (await logs(a.sandboxId, "?search=escape-")).logs.length;
      return found > 0 && (await logs(a.sandboxId, "?search=LLLL")).logs.length > 0;
    });
    const entries = (await logs(a.sandboxId)).logs;
    const note = entries.find((e) => e.message === "forged-node-note")!;
    assert.ok(note, "the forged line is there, as the sandbox's own");
    assert.notEqual(note.fields.source, "node");
    assert.ok(Date.parse(note.timestamp) > Date.now() - 600_000, "its own time 0 is not taken");
    const escaped = entries.find((e) => e.message.startsWith("escape-"))!;
    assert.ok(![...escaped.message].some((c) => c.charCodeAt(0) < 0x20), escaped.message);
    const long = entries.find((e) => e.message.startsWith("LLLL"))!;
    assert.ok(long && long.message.length <= 8192, `cut at 8192, got ${long?.message.length}`);
    assert.ok(!JSON.stringify((await logs(b.sandboxId)).logs).includes("forged-node-note"));
  });

  test("a sandbox flooding its output: its runtime log on the host stays bounded, its lines go on", async () => {
    // 12 MiB of output in one go, three times what the node reads in a round (a second). Made
    // first and then written by one `cat`, so that its writing does not spread over rounds.
    await a.commands.run(
      "head -c 12582912 /dev/zero | tr '\\0' 'F' | fold -w 1000 > /tmp/flood && cat /tmp/flood > /proc/1/fd/2",
      { user: "root", timeoutMs: 60_000 },
    );
    const runscLog = await runscLogOf(a.sandboxId);
    await eventually("the flood read", async () => (await stat(runscLog)).size < 2 ** 20 + 65536);
    let last: Entry | undefined;
    await eventually("the newest tick", async () => {
      last = ticks((await logs(a.sandboxId, "?direction=backward&limit=1&search=tick")).logs)[0];
      return last !== undefined;
    });
    await eventually("ticks after the flood", async () => {
      const now = ticks((await logs(a.sandboxId, "?direction=backward&limit=1&search=tick")).logs)[0];
      return now !== undefined && now.message !== last!.message;
    });
    const dropped = (await logs(a.sandboxId, "?search=were%20dropped")).logs;
    assert.ok(
      dropped.some((e) => e.fields.source === "node"),
      "the node says what it dropped",
    );
    assert.ok((await stat(runscLog)).size < 2 ** 20 + 65536);
  });

  test("kept across a pause and after a kill", async () => {
    assert.equal(await b.pause(), true);
    const resumed = await Sandbox.connect(b.sandboxId);
    const pausedAt = Date.now();
    await eventually(
      "ticks after the resume",
      async () => ticks((await logs(b.sandboxId, `?cursor=${pausedAt}`)).logs).length >= 2,
    );
    const entries = (await logs(b.sandboxId)).logs;
    assert.ok(
      entries.some((e) => e.fields.source === "envd" && /checkpoint/.test(e.message)),
      "envd's own line",
    );
    assert.ok(
      ticks(entries).some((e) => Date.parse(e.timestamp) < pausedAt),
      "the lines before the pause",
    );
    await resumed.kill();
    const after = (await logs(b.sandboxId)).logs;
    assert.ok(ticks(after).length >= ticks(entries).length);
    assert.equal(after.at(-1)!.message, "sandbox stopped");
    const files = await readdir(path.join(moat.dataDir, "telemetry", "logs"));
    assert.ok(files.includes(`${b.sandboxId}.jsonl`));
  });

  async function runscLogOf(sandboxID: string): Promise<string> {
    const root = path.join(moat.dataDir, "sandboxes");
    for (const dir of await readdir(root)) {
      const record = await readFile(path.join(root, dir, "sandbox.json"), "utf8").catch(() => "");
      if (record.includes(`"sandboxID": "${sandboxID}"`)) return path.join(root, dir, "runsc.log");
    }
    throw new Error(`no directory for ${sandboxID}`);
  }
});
