/**
 * Sandbox metrics history end to end: `moat up` sampling every second, read with the unmodified
 * e2b SDK (`sbx.getMetrics`, `Sandbox.getMetrics`), also after the kill; another team's reads;
 * bad ranges; the team metrics routes.
 */
import assert from "node:assert/strict";
import { readdir } from "node:fs/promises";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import { Sandbox, type SandboxMetrics } from "e2b";
import { type RunningMoat, startMoat, useMoat } from "../helpers/moat-up.js";

async function newTeam(moat: RunningMoat, name: string): Promise<{ teamID: string; apiKey: string }> {
  const res = await fetch(`${moat.env.E2B_API_URL}/admin/teams`, {
    method: "POST",
    headers: { "x-admin-token": moat.env.MOAT_ADMIN_TOKEN!, "content-type": "application/json" },
    body: JSON.stringify({ name }),
  });
  assert.equal(res.status, 201, await res.clone().text());
  return (await res.json()) as { teamID: string; apiKey: string };
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Polls the SDK until `check` holds for the samples (at most `timeoutMs`). */
async function metricsUntil(
  read: () => Promise<SandboxMetrics[]>,
  check: (m: SandboxMetrics[]) => boolean,
  what: string,
  timeoutMs = 30_000,
): Promise<SandboxMetrics[]> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const metrics = await read();
    if (check(metrics)) return metrics;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}: ${JSON.stringify(metrics)}`);
    await sleep(500);
  }
}

describe("moat up: sandbox metrics history", { timeout: 240_000 }, () => {
  let moat: RunningMoat;
  let team: { teamID: string; apiKey: string };
  let sbx: Sandbox;

  before(async () => {
    moat = await startMoat({ env: { MOAT_METRICS_INTERVAL: "1" } });
    useMoat(moat);
    team = await newTeam(moat, "metrics-team");
    sbx = await Sandbox.create("base", { apiKey: team.apiKey });
  });

  after(async () => {
    await moat?.cleanup();
  });

  test("several samples over time through sbx.getMetrics, the sandbox's own view", async () => {
    const metrics = await metricsUntil(
      () => sbx.getMetrics(),
      (m) => m.length >= 3,
      "three samples",
    );
    const times = metrics.map((m) => m.timestamp.getTime());
    assert.deepEqual(
      times,
      [...times].sort((a, b) => a - b),
      "oldest first",
    );
    assert.equal(new Set(times).size, times.length, "one sample per second at most");
    for (const m of metrics) {
      assert.ok(m.cpuCount >= 1, `cpuCount ${m.cpuCount}`);
      assert.ok(m.memTotal > 100 * 2 ** 20 && m.memUsed > 0 && m.memUsed <= m.memTotal, JSON.stringify(m));
      assert.ok(m.diskTotal > 0 && m.diskUsed > 0, JSON.stringify(m));
      assert.ok(m.cpuUsedPct >= 0 && m.cpuUsedPct <= 100, `cpu ${m.cpuUsedPct}`);
    }
    // The history is on the node's disk, one file per sandbox.
    const files = await readdir(path.join(moat.dataDir, "telemetry", "metrics"));
    assert.ok(files.includes(`${sbx.sandboxId}.metrics`), files.join(", "));
  });

  test("a CPU burn shows in cpuUsedPct; a range selects its samples", async () => {
    const idle = await sbx.getMetrics();
    const idleMax = Math.max(...idle.map((m) => m.cpuUsedPct));
    const burnStart = new Date();
    // Busy loops on every CPU the sandbox has, for 4 s.
    await sbx.commands.run(
      'for i in $(seq "$(nproc)"); do timeout 4 sh -c "while :; do :; done" & done; wait',
      { timeoutMs: 30_000 },
    );
    const burnEnd = new Date(Date.now() + 2000);
    await sleep(2500);
    const during = await sbx.getMetrics({ start: burnStart, end: burnEnd });
    assert.ok(during.length >= 2, `${during.length} samples in the burn`);
    for (const m of during) {
      assert.ok(m.timestamp.getTime() >= Math.floor(burnStart.getTime() / 1000) * 1000, "in the range");
      // The SDK rounds the range to whole seconds.
      assert.ok(m.timestamp.getTime() <= burnEnd.getTime() + 1000, "in the range");
    }
    const peak = Math.max(...during.map((m) => m.cpuUsedPct));
    assert.ok(peak >= 40, `the burn's peak is ${peak}% (idle at most ${idleMax}%)`);
    assert.ok(peak > idleMax, `the burn's peak ${peak}% is above idle ${idleMax}%`);
  });

  test("another team gets 404; bad ranges are 400", async () => {
    const other = await newTeam(moat, "metrics-other");
    const theirs = await fetch(`${moat.env.E2B_API_URL}/sandboxes/${sbx.sandboxId}/metrics`, {
      headers: { "x-api-key": other.apiKey },
    });
    assert.equal(theirs.status, 404);
    await assert.rejects(Sandbox.getMetrics(sbx.sandboxId, { apiKey: other.apiKey }), /not found/i);
    const latest = await fetch(`${moat.env.E2B_API_URL}/sandboxes/metrics?sandbox_ids=${sbx.sandboxId}`, {
      headers: { "x-api-key": other.apiKey },
    });
    assert.deepEqual(await latest.json(), { sandboxes: {} });
    const ownTeamMetrics = await fetch(`${moat.env.E2B_API_URL}/teams/${team.teamID}/metrics`, {
      headers: { "x-api-key": other.apiKey },
    });
    assert.equal(ownTeamMetrics.status, 403);

    for (const query of ["start=20&end=10", "start=-5", "end=soon"]) {
      const res = await fetch(`${moat.env.E2B_API_URL}/sandboxes/${sbx.sandboxId}/metrics?${query}`, {
        headers: { "x-api-key": team.apiKey },
      });
      assert.equal(res.status, 400, query);
      const body = (await res.json()) as { code: number; message: string };
      assert.equal(body.code, 400);
    }
    await assert.rejects(
      sbx.getMetrics({ start: new Date(Date.now()), end: new Date(Date.now() - 60_000) }),
      /start .* is after end/,
    );
  });

  test("team metrics: the team's concurrent sandboxes and start rate, and their maximum", async () => {
    const headers = { "x-api-key": team.apiKey };
    const since = Math.floor(Date.now() / 1000) - 600;
    const res = await fetch(`${moat.env.E2B_API_URL}/teams/${team.teamID}/metrics?start=${since}`, {
      headers,
    });
    assert.equal(res.status, 200);
    const series = (await res.json()) as Array<{
      timestampUnix: number;
      timestamp: string;
      concurrentSandboxes: number;
      sandboxStartRate: number;
    }>;
    assert.ok(series.length > 0, "points");
    assert.ok(
      series.some((p) => p.concurrentSandboxes === 1),
      "the running sandbox counts",
    );
    assert.ok(
      series.some((p) => p.sandboxStartRate > 0),
      "its start counts",
    );
    const max = await fetch(
      `${moat.env.E2B_API_URL}/teams/${team.teamID}/metrics/max?start=${since}&metric=concurrent_sandboxes`,
      { headers },
    );
    assert.equal(max.status, 200);
    assert.equal(((await max.json()) as { value: number }).value, 1);
  });

  test("after the kill the history is still there; Sandbox.getMetrics and the latest of several", async () => {
    const before = await sbx.getMetrics();
    await sbx.kill();
    assert.equal(await sbx.isRunning(), false);
    await sleep(2000);
    const afterKill = await Sandbox.getMetrics(sbx.sandboxId, { apiKey: team.apiKey });
    assert.ok(afterKill.length >= before.length, `${afterKill.length} samples after the kill`);
    const last = afterKill[afterKill.length - 1]!.timestamp.getTime();
    assert.ok(last <= Date.now() - 1000, "no sample after the kill");
    const latest = await fetch(`${moat.env.E2B_API_URL}/sandboxes/metrics?sandbox_ids=${sbx.sandboxId}`, {
      headers: { "x-api-key": team.apiKey },
    });
    const body = (await latest.json()) as { sandboxes: Record<string, { timestampUnix: number }> };
    assert.equal(body.sandboxes[sbx.sandboxId]?.timestampUnix, Math.floor(last / 1000));
  });
});
