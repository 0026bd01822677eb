/**
 * Quotas against `moat up` with the unmodified e2b SDK: a team (made through the admin route with
 * its own limits) that creates past its concurrent sandboxes gets the SDK's RateLimitError with
 * E2B's message, racing creates never overshoot, the API keeps answering (other teams too), and a
 * killed sandbox frees its slot; pauses past the paused limit are refused; a key past its request
 * rate is told to retry and the SDK does.
 */
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { RateLimitError, Sandbox } from "e2b";
import { type RunningMoat, startMoat } from "../helpers/moat-up.js";

const E2B_LIMIT = /you have reached the maximum number of concurrent E2B sandboxes \(2\)\. If you need more/;

describe("hostile tenants: quotas", { timeout: 600_000 }, () => {
  let moat: RunningMoat;
  const created: Sandbox[] = [];

  /** A team made through the admin route with `limits`; answers the SDK's options for it. */
  async function team(name: string, limits: Record<string, number>) {
    const res = await fetch(`${moat.env.E2B_API_URL}/admin/teams`, {
      method: "POST",
      headers: { "x-admin-token": moat.env.MOAT_ADMIN_TOKEN!, "content-type": "application/json" },
      body: JSON.stringify({ name, limits }),
    });
    assert.equal(res.status, 201, await res.clone().text());
    const { apiKey } = (await res.json()) as { apiKey: string };
    return { apiKey, apiUrl: moat.env.E2B_API_URL, sandboxUrl: moat.env.E2B_SANDBOX_URL };
  }

  before(async () => {
    moat = await startMoat();
  });

  after(async () => {
    await Promise.allSettled(created.map((s) => s.kill()));
    await moat?.cleanup();
  });

  test("creates past the concurrent limit: RateLimitError with E2B's message, no overshoot; a kill frees a slot", async () => {
    const opts = await team("greedy", { maxSandboxes: 2 });
    const results = await Promise.allSettled(Array.from({ length: 5 }, () => Sandbox.create("base", opts)));
    const ok = results.flatMap((r) => (r.status === "fulfilled" ? [r.value] : []));
    created.push(...ok);
    assert.equal(ok.length, 2, "exactly the limit, however the creates race");
    for (const r of results) {
      if (r.status === "rejected") {
        assert.ok(r.reason instanceof RateLimitError, String(r.reason));
        assert.match((r.reason as Error).message, E2B_LIMIT);
      }
    }
    assert.equal((await Sandbox.list(opts).nextItems()).length, 2, "the API keeps answering the team");
    assert.equal((await fetch(`${moat.env.E2B_API_URL}/health`)).status, 200);
    const bystander = await Sandbox.create("base", {
      apiKey: moat.env.E2B_API_KEY!,
      apiUrl: moat.env.E2B_API_URL,
      sandboxUrl: moat.env.E2B_SANDBOX_URL,
    });
    created.push(bystander);
    assert.equal((await bystander.commands.run("echo other team")).stdout, "other team\n");
    await bystander.kill();

    await assert.rejects(Sandbox.create("base", opts), RateLimitError);
    await ok[0]!.kill();
    const next = await Sandbox.create("base", opts);
    created.push(next);
    assert.equal((await next.commands.run("echo freed")).stdout, "freed\n", "the killed sandbox's slot");
    for (const s of [ok[1]!, next]) await s.kill();
  });

  test("a pause past the paused limit is refused and the sandbox keeps running", async () => {
    const opts = await team("hoarder", { maxPausedSandboxes: 1 });
    const [a, b] = await Promise.all([Sandbox.create("base", opts), Sandbox.create("base", opts)]);
    created.push(a, b);
    assert.equal(await a.pause(), true);
    await assert.rejects(b.pause(), (err: unknown) => {
      assert.ok(err instanceof RateLimitError, String(err));
      assert.match((err as Error).message, /maximum number of paused sandboxes \(1\)/);
      return true;
    });
    assert.equal((await b.commands.run("echo still running")).stdout, "still running\n");
    await Promise.all([Sandbox.kill(a.sandboxId, opts), b.kill()]);
  });

  test("a key past its request rate hears Retry-After and the SDK waits and retries", async () => {
    const opts = await team("chatty", { requestsPerSecond: 1, requestBurst: 1 });
    const started = Date.now();
    for (let i = 0; i < 3; i++) assert.deepEqual(await Sandbox.list(opts).nextItems(), []);
    assert.ok(Date.now() - started >= 1_800, "the second and third calls each waited about a second");
  });
});
