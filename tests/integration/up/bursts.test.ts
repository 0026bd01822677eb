/**
 * Bursts of creates against `moat up` with the unmodified e2b SDK: creates beyond what the node
 * boots at once wait their turn (none refused), turns are fair between teams, the warm pool grows
 * with a burst and shrinks back when idle, and only a queue beyond its bound answers 429 with
 * Retry-After.
 */
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { Sandbox } from "e2b";
import { type RunningMoat, startMoat, useMoat } from "../helpers/moat-up.js";

/** The team quotas would refuse a burst before the node sees it: these tests are about the node. */
const QUOTAS = {
  MOAT_TEAM_MAX_SANDBOXES: "100",
  MOAT_TEAM_REQUESTS_PER_SECOND: "1000",
  MOAT_TEAM_REQUEST_BURST: "1000",
};

const METRICS_TOKEN = "bursts-test-metrics-token-0123456789";

/** The orchestrator's JSON log lines with message `msg`. */
function logLines(moat: RunningMoat, msg: string): Record<string, unknown>[] {
  return moat
    .log()
    .split("\n")
    .filter((line) => line.includes(`"msg":"${msg}"`))
    .flatMap((line) => {
      try {
        return [JSON.parse(line) as Record<string, unknown>];
      } catch {
        return [];
      }
    });
}

async function until(what: string, check: () => boolean, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** Creates `n` sandboxes at once for `apiKey`; each resolves when its first command returned. */
function burst(n: number, apiKey?: string): Promise<{ sandbox: Sandbox; doneAt: number }>[] {
  return Array.from({ length: n }, async () => {
    // A loaded CI host restores slowly: the burst may take longer than the SDK's 60 s default.
    const sandbox = await Sandbox.create("base", {
      requestTimeoutMs: 170_000,
      ...(apiKey ? { apiKey } : {}),
    });
    const run = await sandbox.commands.run("true");
    assert.equal(run.exitCode, 0);
    return { sandbox, doneAt: performance.now() };
  });
}

describe("moat up: bursts of creates are queued", { timeout: 600_000 }, () => {
  let moat: RunningMoat;

  before(async () => {
    moat = await startMoat({
      env: {
        ...QUOTAS,
        MOAT_POOL_SIZE: "1",
        MOAT_POOL_MAX: "6",
        MOAT_POOL_IDLE_SECONDS: "30",
        MOAT_CREATE_CONCURRENCY: "2",
        MOAT_CREATE_QUEUE_TIMEOUT_SECONDS: "150",
        MOAT_METRICS_TOKEN: METRICS_TOKEN,
      },
    });
    useMoat(moat);
  });
  after(async () => {
    await moat?.cleanup();
  });

  test("24 concurrent creates, 2 booting at a time: all created and answering, none refused", async () => {
    const logStart = logLines(moat, "sandbox created").length;
    const results = await Promise.allSettled(burst(24));
    const created = results.flatMap((r) => (r.status === "fulfilled" ? [r.value.sandbox] : []));
    const failures = results.flatMap((r) => (r.status === "rejected" ? [String(r.reason)] : []));
    await Promise.all(created.map((s) => s.kill().catch(() => undefined)));
    assert.deepEqual(failures, [], "no create refused or failed");
    assert.equal(created.length, 24);
    const lines = logLines(moat, "sandbox created").slice(logStart);
    const waited = lines.filter((l) => typeof l.queued === "number" && (l.queued as number) >= 100);
    assert.ok(waited.length > 0, "some creates waited for their turn");
  });

  test("the pool grown by the burst shrinks back to its size when idle", async () => {
    const gauge = async (name: string): Promise<number> => {
      const res = await fetch(`http://127.0.0.1:${moat.orchestratorMetricsPort}/metrics`, {
        headers: { authorization: `Bearer ${METRICS_TOKEN}` },
      });
      const match = new RegExp(`^${name} (\\d+)$`, "m").exec(await res.text());
      return match ? Number(match[1]) : Number.NaN;
    };
    // Only a pool grown by a burst shrinks back: back to 1 once 30 s passed without one (on a
    // loaded host the burst's kills may already have taken that long).
    await until(
      "the pool to shrink back",
      () => logLines(moat, "warm pool shrinks back").some((l) => l.ready !== undefined),
      120_000,
    );
    assert.equal(await gauge("moat_orchestrator_warm_pool_target"), 1);
    let ready = Number.NaN;
    await until(
      "one entry ready",
      () => {
        void gauge("moat_orchestrator_warm_pool_ready").then((n) => {
          ready = n;
        });
        return ready === 1;
      },
      60_000,
    );
  });

  test("turns are fair between teams: a second team's creates are not served after a burst", async () => {
    const res = await fetch(`${moat.env.E2B_API_URL}/admin/teams`, {
      method: "POST",
      headers: { "content-type": "application/json", "x-admin-token": moat.env.MOAT_ADMIN_TOKEN! },
      body: JSON.stringify({ name: "bursts-fair" }),
    });
    assert.equal(res.status, 201, await res.clone().text());
    const other = (await res.json()) as { apiKey: string };
    // Team one bursts 10; team two asks for 2 once they wait at the node.
    const first = burst(10);
    await new Promise((r) => setTimeout(r, 500));
    const second = burst(2, other.apiKey);
    const all = await Promise.allSettled([...first, ...second]);
    const done = all.flatMap((r) => (r.status === "fulfilled" ? [r.value] : []));
    await Promise.all(done.map((d) => d.sandbox.kill().catch(() => undefined)));
    assert.equal(
      done.length,
      12,
      all.map((r) => (r.status === "rejected" ? String(r.reason) : "")).join(" "),
    );
    const firstDone = done.slice(0, 10).map((d) => d.doneAt);
    const secondDone = done.slice(10).map((d) => d.doneAt);
    firstDone.sort((a, b) => a - b);
    // First come, first served would serve team two after all ten; fair turns long before the last.
    assert.ok(
      Math.max(...secondDone) < firstDone[7]!,
      `team two's creates ended after team one's eighth (${secondDone.map(Math.round)} vs ${firstDone.map(Math.round)})`,
    );
  });
});

describe("moat up: a create queue beyond its bound answers 429", { timeout: 600_000 }, () => {
  let moat: RunningMoat;

  before(async () => {
    moat = await startMoat({
      env: { ...QUOTAS, MOAT_POOL_SIZE: "0", MOAT_CREATE_CONCURRENCY: "1", MOAT_CREATE_QUEUE_MAX: "1" },
    });
    useMoat(moat);
  });
  after(async () => {
    await moat?.cleanup();
  });

  test("one booting, one waiting: the others get 429 with Retry-After, and no sandbox", async () => {
    const responses = await Promise.all(
      Array.from({ length: 5 }, () =>
        fetch(`${moat.env.E2B_API_URL}/sandboxes`, {
          method: "POST",
          headers: { "content-type": "application/json", "x-api-key": moat.env.E2B_API_KEY! },
          body: JSON.stringify({ templateID: "base", timeout: 60 }),
        }),
      ),
    );
    const bodies = await Promise.all(responses.map((r) => r.json() as Promise<Record<string, unknown>>));
    const created = bodies.filter((_, i) => responses[i]!.status === 201);
    await Promise.all(created.map((b) => Sandbox.kill(String(b.sandboxID)).catch(() => undefined)));
    const refused = responses.flatMap((r, i) => (r.status === 429 ? [{ r, body: bodies[i]! }] : []));
    assert.ok(
      created.length >= 2,
      `one booting and one waiting are created (${responses.map((r) => r.status)})`,
    );
    assert.ok(refused.length >= 1, `some are refused (${responses.map((r) => r.status)})`);
    for (const { r, body } of refused) {
      assert.match(r.headers.get("retry-after") ?? "", /^\d+$/);
      assert.match(String(body.message), /sandboxes waiting to start/);
      assert.equal(body.code, 429);
    }
    // Refused creates leave no sandbox behind: the node lists only what was created and killed.
    const list = await fetch(`${moat.env.E2B_API_URL}/v2/sandboxes?state=running`, {
      headers: { "x-api-key": moat.env.E2B_API_KEY! },
    });
    assert.deepEqual(await list.json(), []);
  });
});
