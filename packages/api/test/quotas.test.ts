/**
 * Per-team quotas: running and paused sandboxes (counted under the team's lock, so racing creates
 * never overshoot), the paused retention, builds in flight, uploads, vCPUs and memory, timeouts,
 * the request rate per key; the operator's defaults and the admin routes that override them.
 */
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { createNoopLogger } from "@moat/shared";
import { RateLimitError, Sandbox } from "e2b";
import { startAPI } from "../src/index.js";
import { FakeOrchestrator } from "./fakes/fake-orchestrator.js";
import { backends, eventually } from "./helpers.js";
import {
  expectError,
  requestBuild,
  sha256,
  startBuild,
  startTemplateTestAPI,
  type TemplateTestAPI,
  waitForBuild,
} from "./template-helpers.js";

const ADMIN_TOKEN = "admin-token-for-quota-tests-0123";
const E2B_LIMIT =
  /^you have reached the maximum number of concurrent E2B sandboxes \((\d+)\)\. If you need more/;

for (const backend of backends) {
  describe(`quotas (${backend.name})`, { timeout: 120_000 }, () => {
    let t: TemplateTestAPI;

    before(async () => {
      t = await startTemplateTestAPI(backend, { adminToken: ADMIN_TOKEN });
    });
    after(() => t.close());

    /** A team made through the admin route, with `limits`. */
    async function team(name: string, limits: Record<string, number> = {}) {
      const res = await t.request("/admin/teams", {
        method: "POST",
        key: null,
        headers: { "x-admin-token": ADMIN_TOKEN },
        json: { name, limits },
      });
      const body = (await res.json()) as { teamID: string; apiKey: string; limits: Record<string, number> };
      assert.equal(res.status, 201, JSON.stringify(body));
      return body;
    }

    const create = (key: string, body: Record<string, unknown> = {}) =>
      t.request("/v2/sandboxes", { method: "POST", key, json: { templateID: "base", ...body } });

    async function running(teamID: string): Promise<number> {
      const row = await t.api.db
        .selectFrom("sandboxes")
        .select((eb) => eb.fn.countAll<string>().as("n"))
        .where("team_id", "=", teamID)
        .where("state", "in", ["starting", "running", "pausing", "resuming"])
        .executeTakeFirstOrThrow();
      return Number(row.n);
    }

    test("concurrent creates racing for the last slots: exactly the limit succeeds, the rest get E2B's 429", async () => {
      const racer = await team("racer", { maxSandboxes: 3 });
      const answers = await Promise.all(Array.from({ length: 12 }, () => create(racer.apiKey)));
      const statuses = answers.map((r) => r.status).sort();
      assert.deepEqual(statuses, [...Array(3).fill(201), ...Array(9).fill(429)], "no overshoot");
      assert.equal(await running(racer.teamID), 3);
      for (const refused of answers.filter((r) => r.status === 429)) {
        const body = (await refused.json()) as { code: number; message: string };
        assert.equal(body.code, 429);
        assert.match(body.message, E2B_LIMIT);
        assert.equal(E2B_LIMIT.exec(body.message)?.[1], "3");
        assert.equal(refused.headers.get("retry-after"), null, "waiting alone frees nothing: no retry");
      }
      // Another team is not held back by this one.
      const other = await team("bystander", { maxSandboxes: 1 });
      assert.equal((await create(other.apiKey)).status, 201);

      // A killed sandbox frees its slot.
      const [first] = (await Promise.all(
        answers.filter((r) => r.status === 201).map((r) => r.json()),
      )) as Array<{ sandboxID: string }>;
      assert.equal(
        (await t.request(`/sandboxes/${first!.sandboxID}`, { method: "DELETE", key: racer.apiKey })).status,
        204,
      );
      assert.equal((await create(racer.apiKey)).status, 201);
      assert.equal((await create(racer.apiKey)).status, 429);
    });

    test("a resume takes a running slot: connect of a paused sandbox at the limit is E2B's 429, and it stays paused", async () => {
      const owner = await team("resumer", { maxSandboxes: 1 });
      const first = (await (await create(owner.apiKey)).json()) as { sandboxID: string };
      assert.equal(
        (await t.request(`/sandboxes/${first.sandboxID}/pause`, { method: "POST", key: owner.apiKey }))
          .status,
        204,
      );
      assert.equal((await create(owner.apiKey)).status, 201, "a paused sandbox holds no running slot");
      const connect = await t.request(`/sandboxes/${first.sandboxID}/connect`, {
        method: "POST",
        key: owner.apiKey,
        json: { timeout: 60 },
      });
      await expectError(connect, 429, E2B_LIMIT);
      const info = (await (
        await t.request(`/sandboxes/${first.sandboxID}`, { key: owner.apiKey })
      ).json()) as {
        state: string;
      };
      assert.equal(info.state, "paused");
    });

    test("paused sandboxes: a pause past maxPausedSandboxes is a 429 and leaves the sandbox running", async () => {
      const owner = await team("pauser", { maxPausedSandboxes: 1 });
      const [a, b] = (await Promise.all(
        [create(owner.apiKey), create(owner.apiKey)].map(async (r) => (await r).json()),
      )) as Array<{
        sandboxID: string;
      }>;
      const pause = (id: string) =>
        t.request(`/sandboxes/${id}/pause`, { method: "POST", key: owner.apiKey });
      assert.equal((await pause(a!.sandboxID)).status, 204);
      await expectError(await pause(b!.sandboxID), 429, /maximum number of paused sandboxes \(1\)/);
      const info = (await (await t.request(`/sandboxes/${b!.sandboxID}`, { key: owner.apiKey })).json()) as {
        state: string;
      };
      assert.equal(info.state, "running");
    });

    test("paused sandboxes past their team's retention are deleted; others and younger ones stay", async () => {
      const short = await team("short-retention", { pausedRetentionSeconds: 60 });
      const long = await team("default-retention");
      const pausedOne = async (key: string) => {
        const { sandboxID } = (await (await create(key)).json()) as { sandboxID: string };
        assert.equal((await t.request(`/sandboxes/${sandboxID}/pause`, { method: "POST", key })).status, 204);
        return sandboxID;
      };
      const [old, young, otherOld] = [
        await pausedOne(short.apiKey),
        await pausedOne(short.apiKey),
        await pausedOne(long.apiKey),
      ];
      const ago = (seconds: number) => new Date(Date.now() - seconds * 1000);
      const setPausedAt = (id: string, at: Date) =>
        t.api.db.updateTable("sandboxes").set({ paused_at: at }).where("sandbox_id", "=", id).execute();
      await setPausedAt(old!, ago(120));
      await setPausedAt(young!, ago(30));
      await setPausedAt(otherOld!, ago(120));

      // The node's KILLED event reaches the API before the answer: the sweep's reason still wins.
      t.fake.deleteAnswerDelayMs = 300;
      const swept = await t.api.sweepPausedSandboxes().finally(() => {
        t.fake.deleteAnswerDelayMs = 0;
      });
      assert.ok(swept.expired >= 1);
      await expectError(await t.request(`/sandboxes/${old}`, { key: short.apiKey }), 404);
      assert.equal(t.fake.sandboxes.has(old!), false, "its node dropped it");
      assert.equal((await t.request(`/sandboxes/${young}`, { key: short.apiKey })).status, 200);
      assert.equal(
        (await t.request(`/sandboxes/${otherOld}`, { key: long.apiKey })).status,
        200,
        "the default is 30 days",
      );
      const row = await t.api.db
        .selectFrom("sandboxes")
        .select(["state", "stop_reason"])
        .where("sandbox_id", "=", old!)
        .executeTakeFirstOrThrow();
      assert.deepEqual(row, {
        state: "killed",
        stop_reason: "paused longer than the team's retention (1 minute)",
      });
      // Paused 31 days ago under the default: gone too.
      await setPausedAt(otherOld!, ago(31 * 86_400));
      await t.api.sweepPausedSandboxes();
      await expectError(await t.request(`/sandboxes/${otherOld}`, { key: long.apiKey }), 404);
    });

    test("auto-pauses past maxPausedSandboxes: the sweep deletes the most recently paused beyond the limit", async () => {
      const owner = await team("auto-pauser", { maxPausedSandboxes: 1 });
      const ids: string[] = [];
      for (let i = 0; i < 3; i++) {
        const { sandboxID } = (await (await create(owner.apiKey, { autoPause: true })).json()) as {
          sandboxID: string;
        };
        ids.push(sandboxID);
      }
      for (const id of ids) {
        t.fake.pauseOutOfBand(id);
        await eventually(async () => {
          const info = (await (await t.request(`/sandboxes/${id}`, { key: owner.apiKey })).json()) as {
            state: string;
          };
          return info.state === "paused";
        });
        await new Promise((r) => setTimeout(r, 5)); // distinct pause times
      }
      const swept = await t.api.sweepPausedSandboxes();
      assert.equal(swept.excess, 2);
      assert.equal(
        (await t.request(`/sandboxes/${ids[0]}`, { key: owner.apiKey })).status,
        200,
        "the first one stays",
      );
      for (const id of ids.slice(1))
        await expectError(await t.request(`/sandboxes/${id}`, { key: owner.apiKey }), 404);
      assert.deepEqual(
        await t.api.sweepPausedSandboxes(),
        { expired: 0, excess: 0 },
        "a second sweep finds nothing",
      );
    });

    test("builds in flight: a start past maxBuilds is a 429; it starts once the running one finished", async () => {
      const builder = await team("builder", { maxBuilds: 1 });
      const as = {
        ...t,
        request: (p: string, i: Parameters<typeof t.request>[1] = {}) =>
          t.request(p, { ...i, key: builder.apiKey }),
      };
      const hold = t.fake.templates.holdNext();
      const first = await requestBuild(as, { name: "one" });
      assert.equal((await startBuild(as, first, { fromImage: "e2bdev/base", steps: [] })).status, 202);
      await hold.reached;
      const second = await requestBuild(as, { name: "two" });
      await expectError(
        await startBuild(as, second, { fromImage: "e2bdev/base", steps: [] }),
        429,
        /maximum number of template builds in progress \(1\)/,
      );
      hold.release();
      assert.equal((await waitForBuild(as, first)).status, "ready");
      assert.equal((await startBuild(as, second, { fromImage: "e2bdev/base", steps: [] })).status, 202);
      assert.equal((await waitForBuild(as, second)).status, "ready");
    });

    test("vCPUs and memory: a template or sandbox past the team's maximum is a 400 that says so", async () => {
      const small = await team("small", { maxVcpu: 1, maxMemoryMB: 512 });
      const post = (json: Record<string, unknown>) =>
        t.request("/v3/templates", { method: "POST", key: small.apiKey, json: { name: "big", ...json } });
      await expectError(await post({ cpuCount: 2, memoryMB: 512 }), 400, /cpuCount: .*2 vCPUs.*1 .*maxVcpu/);
      await expectError(
        await post({ cpuCount: 1, memoryMB: 1024 }),
        400,
        /memoryMB: .*1024 MiB.*512 MiB.*maxMemoryMB/,
      );
      assert.equal((await post({ cpuCount: 1, memoryMB: 512 })).status, 202);
      // The base template's sandboxes have 2 vCPUs.
      await expectError(await create(small.apiKey), 400, /cpuCount: template 'base' asks for 2 vCPUs/);
    });

    test("timeouts past the team's maximum are a 400 on create and set-timeout", async () => {
      const brief = await team("brief", { maxTimeoutSeconds: 60 });
      await expectError(
        await create(brief.apiKey, { timeout: 61 }),
        400,
        /timeout must be at most 60 seconds/,
      );
      const res = await create(brief.apiKey, { timeout: 60 });
      assert.equal(res.status, 201);
      const { sandboxID } = (await res.json()) as { sandboxID: string };
      await expectError(
        await t.request(`/sandboxes/${sandboxID}/timeout`, {
          method: "POST",
          key: brief.apiKey,
          json: { timeout: 61 },
        }),
        400,
        /at most 60 seconds/,
      );
    });

    test("uploads: past the team's per-file size or total stored is a 413; racing uploads never overshoot the total", async () => {
      const uploader = await team("uploader", { maxUploadBytes: 2048, maxStoredUploadBytes: 5000 });
      const as = {
        ...t,
        request: (p: string, i: Parameters<typeof t.request>[1] = {}) =>
          t.request(p, { ...i, key: uploader.apiKey }),
      };
      const { templateID } = await requestBuild(as, { name: "files" });
      const urls = new Map<string, string>();
      const put = async (content: Buffer) => {
        const hash = sha256(content);
        if (!urls.has(hash)) {
          const link = (await (await as.request(`/templates/${templateID}/files/${hash}`)).json()) as {
            url: string;
          };
          urls.set(hash, link.url);
        }
        return t.requestURL(urls.get(hash)!, { method: "PUT", body: content });
      };
      await expectError(await put(Buffer.alloc(2049, 1)), 413, /larger than 2048 bytes/);
      assert.equal((await put(Buffer.alloc(2000, 2))).status, 200);
      assert.equal((await put(Buffer.alloc(2000, 3))).status, 200);
      await expectError(
        await put(Buffer.alloc(2000, 4)),
        413,
        /would take 6000 bytes.*5000.*maxStoredUploadBytes/,
      );
      // The same file again (its signed URL used twice) replaces itself: no double count.
      assert.equal((await put(Buffer.alloc(2000, 3))).status, 200);
      // Two uploads race for the last 1000 bytes: one of them.
      const racing = await Promise.all([put(Buffer.alloc(900, 5)), put(Buffer.alloc(900, 6))]);
      assert.deepEqual(racing.map((r) => r.status).sort(), [200, 413]);
      const stored = await t.api.db
        .selectFrom("template_files")
        .select((eb) => eb.fn.sum<string>("size").as("bytes"))
        .where("team_id", "=", uploader.teamID)
        .executeTakeFirstOrThrow();
      assert.equal(Number(stored.bytes), 4900);
    });

    test("the request rate per key: past the burst a 429 with Retry-After in seconds; each key has its own", async () => {
      const chatty = await team("chatty", { requestsPerSecond: 1, requestBurst: 3 });
      const second = await t.api.createAPIKey(chatty.teamID);
      const list = (key: string) => t.request("/v2/sandboxes", { key });
      for (let i = 0; i < 3; i++) assert.equal((await list(chatty.apiKey)).status, 200);
      const limited = await list(chatty.apiKey);
      assert.equal(limited.headers.get("retry-after"), "1");
      await expectError(limited, 429, /too many requests with this API key.*1 per second.*bursts of 3/);
      assert.equal((await list(second)).status, 200, "another key of the team has its own bucket");
      assert.equal((await t.request("/v2/sandboxes")).status, 200, "another team is not slowed");
      await new Promise((r) => setTimeout(r, 1100));
      assert.equal((await list(chatty.apiKey)).status, 200, "after Retry-After it answers again");
      // One request is one token, whichever route patterns its path matches.
      await new Promise((r) => setTimeout(r, 3100));
      for (let i = 0; i < 3; i++)
        assert.equal((await t.request("/sandboxes", { key: chatty.apiKey })).status, 200);
    });
  });
}

describe("quotas: the operator's settings and the admin routes", { timeout: 60_000 }, () => {
  test("the SDK waits for Retry-After and retries; at the concurrent limit it throws RateLimitError with E2B's message", async () => {
    const fake = new FakeOrchestrator();
    const api = await startAPI({
      dataDir: "/nonexistent-moat-test",
      databaseURL: "memory://",
      port: 0,
      orchestrators: [{ id: "node-1", transport: fake.transport() }],
      logger: createNoopLogger(),
      quotas: { requestsPerSecond: 1, requestBurst: 1, maxSandboxes: 1 },
    });
    try {
      const { apiKey } = await api.bootstrap();
      const opts = { apiKey: apiKey!, apiUrl: api.url };
      const started = Date.now();
      const sbx = await Sandbox.create("base", opts);
      // The second call finds the bucket empty, hears Retry-After: 1, waits and succeeds.
      const listed = await Sandbox.list(opts).nextItems();
      assert.deepEqual(
        listed.map((s) => s.sandboxId),
        [sbx.sandboxId],
      );
      assert.ok(Date.now() - started >= 900, "the SDK waited for Retry-After");
      await new Promise((r) => setTimeout(r, 1100));
      const refused = await Sandbox.create("base", opts).then(
        () => undefined,
        (err: unknown) => err,
      );
      assert.ok(refused instanceof RateLimitError, String(refused));
      assert.match((refused as Error).message, /maximum number of concurrent E2B sandboxes \(1\)/);
    } finally {
      await api.close();
      fake.close();
    }
  });

  test("env vars set the defaults; a team's overrides win; the admin routes read, set and remove them", async () => {
    const backend = backends[0]!;
    const previous = process.env.MOAT_TEAM_MAX_SANDBOXES;
    process.env.MOAT_TEAM_MAX_SANDBOXES = "7";
    let t: TemplateTestAPI;
    try {
      t = await startTemplateTestAPI(backend, { adminToken: ADMIN_TOKEN });
    } finally {
      if (previous === undefined) delete process.env.MOAT_TEAM_MAX_SANDBOXES;
      else process.env.MOAT_TEAM_MAX_SANDBOXES = previous;
    }
    try {
      assert.equal(t.api.config.quotas.maxSandboxes, 7);
      const admin = (method: string, path: string, json?: unknown, token = ADMIN_TOKEN) =>
        t.request(path, { method, key: null, headers: { "x-admin-token": token }, json });
      const created = await admin("POST", "/admin/teams", { name: "limited", limits: { maxBuilds: 4 } });
      assert.equal(created.status, 201);
      const { teamID, limits } = (await created.json()) as { teamID: string; limits: Record<string, number> };
      assert.equal(limits.maxSandboxes, 7, "the default from the environment");
      assert.equal(limits.maxBuilds, 4, "the team's own");

      const patched = await admin("PATCH", `/admin/teams/${teamID}`, {
        limits: { maxSandboxes: 2, maxBuilds: null },
      });
      assert.equal(patched.status, 200);
      const view = (await patched.json()) as {
        limits: Record<string, number>;
        overrides: Record<string, number>;
      };
      assert.deepEqual(view.overrides, { maxSandboxes: 2 });
      assert.equal(view.limits.maxSandboxes, 2);
      assert.equal(view.limits.maxBuilds, t.api.config.quotas.maxBuilds);
      const got = (await (await admin("GET", `/admin/teams/${teamID}`)).json()) as { overrides: unknown };
      assert.deepEqual(got.overrides, { maxSandboxes: 2 });

      await expectError(
        await admin("PATCH", `/admin/teams/${teamID}`, { limits: { maxSandboxes: -1 } }),
        400,
        /maxSandboxes/,
      );
      await expectError(
        await admin("PATCH", `/admin/teams/${teamID}`, { limits: { nonsense: 1 } }),
        400,
        /nonsense/,
      );
      await expectError(await admin("PATCH", `/admin/teams/${teamID}`, { limits: {} }), 400, /at least one/);
      await expectError(await admin("PATCH", "/admin/teams/nosuch", { limits: { maxSandboxes: 1 } }), 404);
      await expectError(
        await admin("GET", `/admin/teams/${teamID}`, undefined, "wrong-token-wrong-token"),
        401,
      );
      await expectError(await t.request(`/admin/teams/${teamID}`, { key: null }), 401);
      await expectError(
        await t.request(`/admin/teams/${teamID}`, { headers: { "x-admin-token": t.apiKey } }),
        401,
        /X-Admin-Token/,
      );
      // The admin token scrapes /metrics too.
      assert.equal(
        (await t.request("/metrics", { key: null, headers: { authorization: `Bearer ${ADMIN_TOKEN}` } }))
          .status,
        200,
      );
    } finally {
      await t.close();
    }
  });
});
