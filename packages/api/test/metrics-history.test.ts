/** Sandbox metrics history through the API (a fake node keeps the samples) and team metrics. */
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { getSandbox } from "../src/db/sandboxes.js";
import { metricsRange, stepFor } from "../src/sandbox/metrics.js";
import { teamMax, teamSeries } from "../src/sandbox/team-metrics.js";
import { backends, createSandbox, startTestAPI, type TestAPI } from "./helpers.js";

interface Metric {
  timestampUnix: number;
  timestamp: string;
  cpuUsedPct: number;
  memTotal: number;
}

test("ranges: E2B's defaults (creation to now), start after end refused; E2B's steps", () => {
  assert.deepEqual(metricsRange({}, 1000, 2000), { start: 1000, end: 2000 });
  assert.deepEqual(metricsRange({ start: 1500 }, 1000, 2000), { start: 1500, end: 2000 });
  assert.deepEqual(metricsRange({ end: 1200 }, 1000, 2000), { start: 1000, end: 1200 });
  // An end before the creation: the range starts there, not at the creation.
  assert.deepEqual(metricsRange({ end: 900 }, 1000, 2000), { start: 900, end: 900 });
  assert.throws(
    () => metricsRange({ start: 1500, end: 1400 }, 1000, 2000),
    /start \(1500\) is after end \(1400\)/,
  );
  assert.equal(stepFor(0, 3599), 0);
  assert.equal(stepFor(0, 3600), 30);
  assert.equal(stepFor(0, 86_400), 300);
  assert.equal(stepFor(0, 30 * 86_400), 900);
});

test("team series: the most sandboxes alive at once per step and starts per second", () => {
  const s = (sec: number) => sec * 1000;
  const lives = [
    { start: s(100), end: s(112) },
    { start: s(101), end: undefined },
    { start: s(112), end: s(113) },
    { start: s(200), end: s(201) },
  ];
  const points = teamSeries(lives, 100, 119);
  assert.deepEqual(
    points.map((p) => [p.timestampUnix, p.concurrentSandboxes, p.sandboxStartRate]),
    [
      [100, 2, 0.4],
      [105, 2, 0],
      // One ended as another began at 112: never three at once.
      [110, 2, 0.2],
      [115, 1, 0],
    ],
  );
  assert.deepEqual(teamMax(points, "concurrent_sandboxes"), {
    timestamp: new Date(100_000).toISOString(),
    timestampUnix: 100,
    value: 2,
  });
  assert.equal(teamMax(points, "sandbox_start_rate").value, 0.4);
  assert.equal(teamMax([], "concurrent_sandboxes").value, 0);
  // A year at most 10 000 points, whatever the step table says.
  assert.ok(teamSeries([], 0, 365 * 86_400).length <= 10_000, "a year's points are capped");
});

for (const backend of backends) {
  describe(`metrics history (${backend.name})`, () => {
    let t: TestAPI;
    before(async () => {
      t = await startTestAPI(backend);
    });
    after(() => t.close());

    test("a sandbox's samples in a range, with E2B's defaults; still readable after a kill", async () => {
      const sbx = await createSandbox(t);
      // The record's creation, not the test's clock: under load the create may take seconds.
      const created = Math.floor((await getSandbox(t.api.db, sbx.sandboxID))!.created_at.getTime() / 1000);
      // Samples from the sandbox's first second (the default range starts at its creation).
      t.fake.metricSamples.set(sbx.sandboxID, {
        teamID: t.teamID,
        samples: [
          { time: created, cpuUsedPct: 1 },
          { time: created, cpuUsedPct: 90 },
          { time: created, cpuUsedPct: 5 },
        ],
      });
      const all = (await (await t.request(`/sandboxes/${sbx.sandboxID}/metrics`)).json()) as Metric[];
      assert.deepEqual(
        all.map((m) => m.cpuUsedPct),
        [1, 90, 5],
      );
      assert.equal(all[0]!.timestamp, new Date(created * 1000).toISOString());
      assert.equal(all[0]!.timestampUnix, created);
      assert.equal(all[0]!.memTotal, 512 * 2 ** 20);
      // Defaults: from the sandbox's creation to now, every sample (step 0).
      assert.ok(Math.abs(t.fake.lastMetricsRequest!.start! - created) <= 1, "start defaults to the creation");
      assert.ok(t.fake.lastMetricsRequest!.end! >= created, "end defaults to now");
      assert.equal(t.fake.lastMetricsRequest?.stepSeconds, 0);
      const some = (await (
        await t.request(`/sandboxes/${sbx.sandboxID}/metrics?start=${created + 100}&end=${created + 200}`)
      ).json()) as Metric[];
      assert.deepEqual(some, []);
      // A day: averaged over E2B's step for it.
      await t.request(`/sandboxes/${sbx.sandboxID}/metrics?start=${created}&end=${created + 86_400}`);
      assert.equal(t.fake.lastMetricsRequest?.stepSeconds, 300);
      const latest = (await (await t.request(`/sandboxes/metrics?sandbox_ids=${sbx.sandboxID}`)).json()) as {
        sandboxes: Record<string, Metric>;
      };
      assert.equal(latest.sandboxes[sbx.sandboxID]?.cpuUsedPct, 5);
      assert.equal(t.fake.lastMetricsRequest?.latest, true);

      assert.equal((await t.request(`/sandboxes/${sbx.sandboxID}`, { method: "DELETE" })).status, 204);
      const afterKill = (await (await t.request(`/sandboxes/${sbx.sandboxID}/metrics`)).json()) as Metric[];
      assert.equal(afterKill.length, 3, "a killed sandbox's history is read from its node");
      const afterKillLatest = (await (
        await t.request(`/sandboxes/metrics?sandbox_ids=${sbx.sandboxID}`)
      ).json()) as { sandboxes: Record<string, Metric> };
      assert.ok(afterKillLatest.sandboxes[sbx.sandboxID], "the latest of a killed sandbox");
    });

    test("another team's sandbox is 404, and the node is asked for the caller's team only", async () => {
      const sbx = await createSandbox(t);
      t.fake.metricSamples.set(sbx.sandboxID, { teamID: t.teamID, samples: [{ time: 1, cpuUsedPct: 1 }] });
      const other = await t.newTeam("metrics-other");
      const res = await t.request(`/sandboxes/${sbx.sandboxID}/metrics`, { key: other.apiKey });
      assert.equal(res.status, 404);
      assert.equal(((await res.json()) as { code: number }).code, 404);
      const many = await t.request(`/sandboxes/metrics?sandbox_ids=${sbx.sandboxID}`, { key: other.apiKey });
      assert.deepEqual(await many.json(), { sandboxes: {} });
    });

    test("bad ranges are 400 with what to send", async () => {
      const sbx = await createSandbox(t);
      for (const query of ["start=10&end=5", "start=-1", "end=abc", "start=1.5", `end=${2 ** 33}`]) {
        const res = await t.request(`/sandboxes/${sbx.sandboxID}/metrics?${query}`);
        assert.equal(res.status, 400, query);
        const body = (await res.json()) as { code: number; message: string };
        assert.equal(body.code, 400);
        assert.ok(body.message.length > 0, "a message");
      }
      const res = await t.request(`/sandboxes/${sbx.sandboxID}/metrics?start=10&end=5`);
      assert.match(((await res.json()) as { message: string }).message, /start \(10\) is after end \(5\)/);
    });

    test("a live sandbox whose node is down: 503 saying to retry; a killed one: an empty history", async () => {
      const sbx = await createSandbox(t);
      t.fake.goDown();
      try {
        const res = await t.request(`/sandboxes/${sbx.sandboxID}/metrics`);
        assert.equal(res.status, 503);
        assert.match(((await res.json()) as { message: string }).message, /try again/);
      } finally {
        t.fake.goDown(false);
      }
    });

    test("team metrics: the caller's own team only (403 for another), E2B's shapes", async () => {
      const own = await t.request(`/teams/${t.teamID}/metrics`);
      assert.equal(own.status, 200);
      const series = (await own.json()) as Array<{ timestampUnix: number; concurrentSandboxes: number }>;
      assert.ok(series.length > 0, "points");
      assert.ok(
        series.some((p) => p.concurrentSandboxes >= 1),
        "sandboxes made by the tests above count",
      );
      const max = await t.request(`/teams/${t.teamID}/metrics/max?metric=concurrent_sandboxes`);
      assert.equal(max.status, 200);
      const maxBody = (await max.json()) as { value: number; timestampUnix: number; timestamp: string };
      assert.ok(maxBody.value >= 1, `max ${maxBody.value}`);
      assert.equal(typeof maxBody.timestamp, "string");

      const other = await t.newTeam("team-metrics-other");
      const denied = await t.request(`/teams/${t.teamID}/metrics`, { key: other.apiKey });
      assert.equal(denied.status, 403);
      assert.equal(((await denied.json()) as { code: number }).code, 403);
      assert.equal(
        (await t.request(`/teams/${t.teamID}/metrics/max?metric=sandbox_start_rate`, { key: other.apiKey }))
          .status,
        403,
      );
      assert.equal((await t.request(`/teams/${t.teamID}/metrics?start=10&end=5`)).status, 400);
      assert.equal((await t.request(`/teams/${t.teamID}/metrics/max?metric=nonsense`)).status, 400);
      assert.equal((await t.request(`/teams/${t.teamID}/metrics/max`)).status, 400);
      assert.equal((await t.request(`/teams/${t.teamID}/metrics`, { key: null })).status, 401);
    });
  });
}
