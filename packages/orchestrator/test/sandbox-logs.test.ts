import assert from "node:assert/strict";
import { appendFile, mkdtemp, readdir, readFile, rm, stat, utimes, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import { createNoopLogger } from "@moat/shared";
import { SandboxLogCollector, TRUNCATE_BYTES } from "../src/telemetry/logs/collector.js";
import { parseLine } from "../src/telemetry/logs/entry.js";
import { SandboxLogStore } from "../src/telemetry/logs/store.js";

const logger = createNoopLogger();
const query = { cursor: 0, limit: 1000, direction: "forward" as const, level: "debug" as const, search: "" };

describe("sandbox log lines", () => {
  test("envd's JSON lines keep level, message and fields; other lines are runtime text", () => {
    const now = 1_000_000;
    const e = parseLine(
      JSON.stringify({
        level: 50,
        time: now - 5,
        msg: "boom",
        component: "envd",
        pid: 1,
        source: "start",
        stream: "stderr",
      }),
      now,
      0,
    );
    assert.deepEqual(e, { t: now - 5, l: "error", m: "boom", s: "start", f: { stream: "stderr" } });
    assert.equal(parseLine(JSON.stringify({ level: 30, msg: "hi" }), now, 0).s, "envd");
    assert.deepEqual(parseLine("plain text", now, 0), { t: now, l: "info", m: "plain text", s: "runtime" });
    assert.equal(parseLine('{"not":"pino"}', now, 0).s, "runtime");
  });

  test("a sandbox's own clock cannot move its entries before the last one or past now", () => {
    const now = 1_000_000;
    assert.equal(parseLine(JSON.stringify({ level: 30, msg: "past", time: 5 }), now, now - 10).t, now - 10);
    assert.equal(parseLine(JSON.stringify({ level: 30, msg: "future", time: now * 9 }), now, 0).t, now);
  });

  test("lines are cut, control characters replaced, fields bounded; a node source cannot be claimed", () => {
    const e = parseLine(
      JSON.stringify({
        level: 30,
        msg: `\u001b]0;owned\u0007${"x".repeat(20_000)}`,
        source: "node",
        ...Object.fromEntries(Array.from({ length: 40 }, (_, i) => [`k${i}`, "v".repeat(5000)])),
      }),
      1,
      0,
    );
    assert.equal(e.s, "envd");
    assert.ok(e.m.length <= 8192);
    assert.ok(![...e.m].some((c) => c.charCodeAt(0) < 0x20), "no control characters");
    assert.equal(Object.keys(e.f!).length, 16);
    assert.ok(Object.values(e.f!).every((v) => v.length <= 1024));
  });
});

describe("sandbox log store and collector", () => {
  let dir: string;
  before(async () => {
    dir = await mkdtemp(path.join(tmpdir(), "moat-logs-"));
  });
  after(() => rm(dir, { recursive: true, force: true }));

  test("query: cursor inclusive both ways, level minimum, substring search, limit", async () => {
    const store = new SandboxLogStore({ dataDir: dir, retentionHours: 1, maxBytes: 2 ** 20, logger });
    await store.start();
    await store.append("aaaa", [
      { t: 10, l: "debug", m: "one", s: "envd" },
      { t: 20, l: "info", m: "two%", s: "start" },
      { t: 20, l: "error", m: "three", s: "start" },
      { t: 30, l: "warn", m: "four", s: "envd" },
    ]);
    const msgs = async (q: Partial<typeof query>, id = "aaaa") =>
      (await store.query(id, { ...query, ...q })).map((e) => e.m);
    assert.deepEqual(await msgs({}), ["one", "two%", "three", "four"]);
    assert.deepEqual(await msgs({ cursor: 20 }), ["two%", "three", "four"]);
    assert.deepEqual(await msgs({ cursor: 20, direction: "backward" }), ["three", "two%", "one"]);
    assert.deepEqual(await msgs({ level: "warn" }), ["three", "four"]);
    assert.deepEqual(await msgs({ search: "%" }), ["two%"]);
    assert.deepEqual(await msgs({ limit: 2, direction: "backward" }), ["four", "three"]);
    assert.deepEqual(await msgs({}, "bbbb"), [], "another sandbox's log is its own");
    assert.deepEqual(await msgs({}, "../aaaa"), [], "ids are never paths");
    store.stop();
  });

  test("capped: past the cap the oldest entries go, said once", async () => {
    const store = new SandboxLogStore({ dataDir: dir, retentionHours: 1, maxBytes: 4096, logger });
    await store.start();
    for (let i = 0; i < 200; i++)
      await store.append("capped", [{ t: i, l: "info", m: `line ${i}`, s: "start" }]);
    const entries = await store.query("capped", query);
    const files = (await readdir(store.dir)).filter((f) => f.startsWith("capped") && f.endsWith(".jsonl"));
    let bytes = 0;
    for (const f of files) bytes += (await stat(path.join(store.dir, f))).size;
    assert.ok(bytes <= 4096, `${bytes} bytes on disk`);
    assert.equal(entries.at(-1)!.m, "line 199");
    assert.ok(!entries.some((e) => e.m === "line 0"));
    assert.equal(entries.filter((e) => e.s === "node").length <= 1, true);
    const all = [...entries];
    for (let i = 200; i < 400; i++)
      await store.append("capped", [{ t: i, l: "info", m: `line ${i}`, s: "start" }]);
    const notes = (await store.query("capped", { ...query, search: "dropped" })).length;
    assert.ok(notes <= 1 && all.length > 0);
    store.stop();
  });

  test("retention sweeps old logs but those of sandboxes the node still has", async () => {
    const store = new SandboxLogStore({
      dataDir: dir,
      retentionHours: 1,
      maxBytes: 2 ** 20,
      logger,
      isLive: (id) => id === "live",
    });
    await store.start();
    for (const id of ["old", "live", "fresh"])
      await store.append(id, [{ t: 1, l: "info", m: id, s: "envd" }]);
    const past = new Date(Date.now() - 2 * 3_600_000);
    for (const id of ["old", "live"]) await utimes(path.join(store.dir, `${id}.jsonl`), past, past);
    await store.sweep();
    assert.deepEqual((await store.query("old", query)).length, 0);
    assert.deepEqual((await store.query("live", query)).length, 1);
    assert.deepEqual((await store.query("fresh", query)).length, 1);
    store.stop();
  });

  test("collector: reads new output once, keeps partial lines, empties the runtime log past its threshold", async () => {
    const store = new SandboxLogStore({ dataDir: dir, retentionHours: 1, maxBytes: 50 * 2 ** 20, logger });
    await store.start();
    const sandboxDir = path.join(dir, "sbx");
    await rm(sandboxDir, { recursive: true, force: true });
    await import("node:fs/promises").then((fs) => fs.mkdir(sandboxDir));
    const runscLog = path.join(sandboxDir, "runsc.log");
    await writeFile(runscLog, `${JSON.stringify({ level: 30, msg: "envd up" })}\npart`);
    const collector = new SandboxLogCollector({ store, sandboxes: () => [], logger });
    await collector.collect("col", sandboxDir);
    await appendFile(runscLog, "ial\n");
    await collector.collect("col", sandboxDir);
    await collector.collect("col", sandboxDir);
    assert.deepEqual(
      (await store.query("col", query)).map((e) => [e.m, e.s]),
      [
        ["envd up", "envd"],
        ["partial", "runtime"],
      ],
    );
    await appendFile(runscLog, `${"y".repeat(100)}\n`.repeat(Math.ceil(TRUNCATE_BYTES / 101) + 10));
    await collector.collect("col", sandboxDir);
    assert.equal((await stat(runscLog)).size, 0, "emptied once read");
    await appendFile(runscLog, "after\n");
    await collector.collect("col", sandboxDir);
    assert.equal((await store.query("col", { ...query, search: "after" })).length, 1);
    const text = await readFile(path.join(store.dir, "col.jsonl"), "utf8");
    assert.ok(text.length > TRUNCATE_BYTES);
    store.stop();
  });
});
