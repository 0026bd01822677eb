import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { Code } from "@connectrpc/connect";
import { SandboxEventType } from "@moat/shared/gen/orchestrator";
import { backends, createSandbox, errorBody, eventually, startTestAPI, type TestAPI } from "./helpers.js";

for (const backend of backends) {
  describe(`sandbox lifecycle (${backend.name})`, () => {
    let t: TestAPI;
    before(async () => {
      t = await startTestAPI(backend, { domain: undefined });
    });
    after(() => t.close());

    test("v2 create answers 201 with the node's envd version and an access token", async () => {
      const res = await t.request("/v2/sandboxes", {
        method: "POST",
        json: { templateID: "base", metadata: { user: "alice" }, envVars: { A: "1" } },
      });
      assert.equal(res.status, 201);
      const body = (await res.json()) as Record<string, unknown>;
      assert.match(body.sandboxID as string, /^[a-z0-9]{20}$/);
      assert.equal(body.templateID, "base");
      assert.equal(body.alias, "base");
      assert.equal(body.envdVersion, "0.6.13");
      assert.match(body.envdAccessToken as string, /^[0-9a-f]{64}$/);
      assert.equal(body.trafficAccessToken, null);
      assert.equal(body.domain, null);
      assert.equal(typeof body.clientID, "string");

      const onNode = t.fake.sandboxes.get(body.sandboxID as string)!;
      assert.equal(onNode.config.envdAccessToken, body.envdAccessToken, "the node gets the token for /init");
      assert.deepEqual(onNode.config.envVars, { A: "1" });
      assert.equal(onNode.config.teamId, t.teamID);
      const lifetime = onNode.endTime.getTime() - Date.now();
      assert.ok(lifetime > 290_000 && lifetime <= 300_000, `v2 default timeout is 300 s, got ${lifetime} ms`);
    });

    test("v1 create defaults to 15 s and issues a token only when secure", async () => {
      const plain = await t.request("/sandboxes", { method: "POST", json: { templateID: "base" } });
      assert.equal(plain.status, 201);
      const plainBody = (await plain.json()) as Record<string, unknown>;
      assert.equal(plainBody.envdAccessToken, undefined);
      const lifetime = t.fake.sandboxes.get(plainBody.sandboxID as string)!.endTime.getTime() - Date.now();
      assert.ok(lifetime > 10_000 && lifetime <= 15_000, `v1 default timeout is 15 s, got ${lifetime} ms`);

      const secure = await t.request("/sandboxes", {
        method: "POST",
        json: { templateID: "base", timeout: 300, secure: true, allow_internet_access: true },
      });
      assert.equal(secure.status, 201);
      assert.match(((await secure.json()) as { envdAccessToken: string }).envdAccessToken, /^[0-9a-f]{64}$/);
    });

    test("a traffic token is issued only when public traffic is off", async () => {
      const sbx = await createSandbox(t, { network: { allowPublicTraffic: false } });
      assert.match(sbx.trafficAccessToken as string, /^[0-9a-f]{64}$/);
      const entry = await t.api.catalog.lookup(sbx.sandboxID);
      assert.equal(entry?.trafficAccessToken, sbx.trafficAccessToken);
      assert.equal(entry?.envdAccessToken, sbx.envdAccessToken);
      assert.equal(entry?.state, "running");
    });

    test("get answers the detail; kill answers 204 and then 404", async () => {
      const sbx = await createSandbox(t, { metadata: { k: "v" }, allow_internet_access: false });
      const got = await t.request(`/sandboxes/${sbx.sandboxID}`);
      assert.equal(got.status, 200);
      const detail = (await got.json()) as Record<string, unknown>;
      assert.equal(detail.sandboxID, sbx.sandboxID);
      assert.equal(detail.state, "running");
      assert.deepEqual(detail.metadata, { k: "v" });
      assert.equal(detail.cpuCount, 2);
      assert.equal(detail.memoryMB, 512);
      assert.equal(detail.envdVersion, "0.6.13");
      assert.equal(detail.envdAccessToken, sbx.envdAccessToken);
      assert.equal(detail.allowInternetAccess, false);
      assert.deepEqual(detail.lifecycle, { onTimeout: "kill", autoResume: false });
      assert.ok(Date.parse(detail.endAt as string) > Date.parse(detail.startedAt as string));
      assert.equal(t.fake.sandboxes.get(sbx.sandboxID)!.config.allowInternetAccess, false);

      const kill = await t.request(`/sandboxes/${sbx.sandboxID}`, { method: "DELETE" });
      assert.equal(kill.status, 204);
      assert.equal(t.fake.sandboxes.has(sbx.sandboxID), false);
      const again = await t.request(`/sandboxes/${sbx.sandboxID}`, { method: "DELETE" });
      assert.equal(again.status, 404);
      assert.deepEqual(await errorBody(again), {
        code: 404,
        message: `sandbox '${sbx.sandboxID}' not found`,
      });
      assert.equal((await t.request(`/sandboxes/${sbx.sandboxID}`)).status, 404);
      assert.equal(await t.api.catalog.lookup(sbx.sandboxID), undefined);
    });

    test("set timeout moves the end time both ways and tells the node", async () => {
      const sbx = await createSandbox(t);
      const shorten = await t.request(`/sandboxes/${sbx.sandboxID}/timeout`, {
        method: "POST",
        json: { timeout: 30 },
      });
      assert.equal(shorten.status, 204);
      const end = t.fake.sandboxes.get(sbx.sandboxID)!.endTime.getTime() - Date.now();
      assert.ok(end > 25_000 && end <= 30_000, `end moved to ~30 s, got ${end} ms`);
      const detail = (await (await t.request(`/sandboxes/${sbx.sandboxID}`)).json()) as { endAt: string };
      assert.ok(
        Math.abs(Date.parse(detail.endAt) - t.fake.sandboxes.get(sbx.sandboxID)!.endTime.getTime()) < 5,
      );

      const tooLong = await t.request(`/sandboxes/${sbx.sandboxID}/timeout`, {
        method: "POST",
        json: { timeout: 86_401 },
      });
      assert.equal(tooLong.status, 400);
      assert.match(((await tooLong.json()) as { message: string }).message, /at most 86400 seconds/);
    });

    test("connect extends only and answers the sandbox with its token", async () => {
      const sbx = await createSandbox(t, { timeout: 60 });
      const before = t.fake.sandboxes.get(sbx.sandboxID)!.endTime.getTime();
      const shorter = await t.request(`/v2/sandboxes/${sbx.sandboxID}/connect`, {
        method: "POST",
        json: { timeout: 10 },
      });
      assert.equal(shorter.status, 200);
      assert.equal(t.fake.sandboxes.get(sbx.sandboxID)!.endTime.getTime(), before, "connect never shortens");
      const body = (await shorter.json()) as Record<string, unknown>;
      assert.equal(body.sandboxID, sbx.sandboxID);
      assert.equal(body.envdAccessToken, sbx.envdAccessToken);
      assert.equal(body.envdVersion, "0.6.13");

      const longer = await t.request(`/v2/sandboxes/${sbx.sandboxID}/connect`, { method: "POST" });
      assert.equal(longer.status, 200, "no body: 300 s");
      const end = t.fake.sandboxes.get(sbx.sandboxID)!.endTime.getTime() - Date.now();
      assert.ok(end > 290_000, `extended to ~300 s, got ${end} ms`);

      const v1 = await t.request(`/sandboxes/${sbx.sandboxID}/connect`, {
        method: "POST",
        json: { timeout: 600 },
      });
      assert.equal(v1.status, 200);
      const v1Missing = await t.request(`/sandboxes/${sbx.sandboxID}/connect`, { method: "POST", json: {} });
      assert.equal(v1Missing.status, 400, "v1 connect requires timeout");
      const gone = await t.request("/v2/sandboxes/doesnotexist0000000/connect", { method: "POST", json: {} });
      assert.equal(gone.status, 404);
    });

    test("refresh extends by at least 15 s", async () => {
      const sbx = await createSandbox(t, { timeout: 5 });
      const res = await t.request(`/sandboxes/${sbx.sandboxID}/refreshes`, { method: "POST", json: {} });
      assert.equal(res.status, 204);
      const end = t.fake.sandboxes.get(sbx.sandboxID)!.endTime.getTime() - Date.now();
      assert.ok(end > 10_000 && end <= 15_000, `~15 s, got ${end} ms`);
    });

    test("a sandbox the node expires is gone: 404 on get and kill, absent from lists and catalog", async () => {
      const sbx = await createSandbox(t, { timeout: 1 });
      await eventually(async () => (await t.request(`/sandboxes/${sbx.sandboxID}`)).status === 404);
      assert.equal((await t.request(`/sandboxes/${sbx.sandboxID}`, { method: "DELETE" })).status, 404);
      const listed = (await (await t.request("/v2/sandboxes")).json()) as Array<{ sandboxID: string }>;
      assert.ok(!listed.some((s) => s.sandboxID === sbx.sandboxID));
      assert.equal(await t.api.catalog.lookup(sbx.sandboxID), undefined);
      const logs = (await (await t.request(`/sandboxes/${sbx.sandboxID}/logs`)).json()) as {
        logs: Array<{ line: string }>;
      };
      const lines = logs.logs.map((l) => JSON.parse(l.line) as Record<string, string>);
      assert.ok(lines.some((l) => l.message === "sandbox stopped" && /timeout/.test(l.reason ?? "")));
    });

    test("a runtime failure reported by the node closes the sandbox", async () => {
      const sbx = await createSandbox(t);
      t.fake.stopOutOfBand(sbx.sandboxID, SandboxEventType.FAILED, "runtime exited");
      await eventually(async () => (await t.request(`/sandboxes/${sbx.sandboxID}`)).status === 404);
    });

    test("a sandbox the node lost without an event: kill and timeout answer 404", async () => {
      const a = await createSandbox(t);
      t.fake.dropSilently(a.sandboxID);
      assert.equal((await t.request(`/sandboxes/${a.sandboxID}`, { method: "DELETE" })).status, 404);
      assert.equal((await t.request(`/sandboxes/${a.sandboxID}`)).status, 404);
      const b = await createSandbox(t);
      t.fake.dropSilently(b.sandboxID);
      const res = await t.request(`/sandboxes/${b.sandboxID}/timeout`, {
        method: "POST",
        json: { timeout: 60 },
      });
      assert.equal(res.status, 404);
    });

    test("logs: every line is a JSON object with string level and logger", async () => {
      const sbx = await createSandbox(t);
      await t.request(`/sandboxes/${sbx.sandboxID}`, { method: "DELETE" });
      const res = await t.request(`/sandboxes/${sbx.sandboxID}/logs?start=0&limit=10`);
      assert.equal(res.status, 200);
      const body = (await res.json()) as {
        logs: Array<{ timestamp: string; line: string }>;
        logEntries: Array<{ level: string; message: string; fields: Record<string, string> }>;
      };
      assert.ok(body.logs.length >= 2);
      for (const { line, timestamp } of body.logs) {
        const parsed = JSON.parse(line) as Record<string, unknown>;
        assert.equal(typeof parsed.level, "string");
        assert.equal(typeof parsed.logger, "string");
        assert.ok(!Number.isNaN(Date.parse(timestamp)));
      }
      assert.deepEqual(
        body.logEntries.map((e) => e.message),
        ["sandbox created", "sandbox stopped"],
      );
      const later = await t.request(`/sandboxes/${sbx.sandboxID}/logs?start=${Date.now() + 60_000}`);
      assert.deepEqual(((await later.json()) as { logs: unknown[] }).logs, []);
    });

    test("metrics: an empty list when envd cannot be read; 404 for unknown sandboxes", async () => {
      const sbx = await createSandbox(t);
      const res = await t.request(`/sandboxes/${sbx.sandboxID}/metrics`);
      assert.equal(res.status, 200);
      assert.deepEqual(await res.json(), []);
      assert.equal((await t.request("/sandboxes/nosuchsandbox/metrics")).status, 404);
      const many = await t.request(`/sandboxes/metrics?sandbox_ids=${sbx.sandboxID},nosuch`);
      assert.equal(many.status, 200);
      assert.deepEqual(await many.json(), { sandboxes: {} });
    });

    test("node failures: busy and unreachable nodes answer 429 with Retry-After (the SDK retries), unknown templates 404", async () => {
      t.fake.failNext("create", Code.ResourceExhausted, "node busy: 16 sandboxes already starting");
      const busy = await t.request("/v2/sandboxes", { method: "POST", json: { templateID: "base" } });
      assert.equal(busy.status, 429);
      assert.equal(busy.headers.get("retry-after"), "1");
      const busyBody = (await busy.json()) as { code: number; message: string };
      assert.equal(busyBody.code, 429);
      assert.match(busyBody.message, /retry/);

      t.fake.failNext("create", Code.Unavailable, "connection refused");
      assert.equal(
        (await t.request("/v2/sandboxes", { method: "POST", json: { templateID: "base" } })).status,
        429,
      );

      const missing = await t.request("/v2/sandboxes", { method: "POST", json: { templateID: "nosuch" } });
      assert.equal(missing.status, 404);
      assert.deepEqual(await errorBody(missing), { code: 404, message: "template 'nosuch' not found" });
      assert.equal(
        (await t.request("/v2/sandboxes", { method: "POST", json: { templateID: "base:default" } })).status,
        201,
      );

      t.fake.failNext("create", Code.Internal, "disk full");
      const internal = await t.request("/v2/sandboxes", { method: "POST", json: { templateID: "base" } });
      assert.equal(internal.status, 500);
      assert.deepEqual(await errorBody(internal), { code: 500, message: "internal error" });

      t.fake.failNext("delete", Code.Internal, "runsc hung");
      const sbx = await createSandbox(t);
      assert.equal((await t.request(`/sandboxes/${sbx.sandboxID}`, { method: "DELETE" })).status, 500);
      assert.equal(
        (await t.request(`/sandboxes/${sbx.sandboxID}`)).status,
        200,
        "a failed kill leaves it running",
      );
      assert.equal((await t.request(`/sandboxes/${sbx.sandboxID}`, { method: "DELETE" })).status, 204);
    });
  });

  describe(`kills on a busy node (${backend.name})`, () => {
    let t: TestAPI;
    before(async () => {
      // Ordinary calls get 100 ms, transitions 10 s: a kill is a transition.
      t = await startTestAPI(backend, {}, { deadlines: { call: 100, transition: 10_000 } });
    });
    after(() => t.close());

    test("a kill the node takes longer for than an ordinary call answers 204, not 500", async () => {
      // A busy node takes over 15 s to tear a sandbox down (the soak saw it): the kill was
      // answered 500 and the sandbox went back to running while the node went on killing it.
      const sbx = await createSandbox(t);
      const hold = t.fake.holdNext("delete");
      const kill = t.request(`/sandboxes/${sbx.sandboxID}`, { method: "DELETE" });
      await hold.reached;
      await new Promise((r) => setTimeout(r, 500));
      hold.release();
      assert.equal((await kill).status, 204);
      assert.equal((await t.request(`/sandboxes/${sbx.sandboxID}`)).status, 404);
    });
  });
}
