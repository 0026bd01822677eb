/**
 * Pause and resume through the API on the fake node: the statuses and bodies the SDK reads, the
 * records, the routing catalog, one Pause or Resume call per sandbox however many requests race,
 * the node's own pauses (auto-pause) and resumes, and the proxy's auto-resume.
 */
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { Code } from "@connectrpc/connect";
import { type CatalogEntry, createNoopLogger } from "@moat/shared";
import { type API, openAPI } from "../src/index.js";
import { FakeOrchestrator } from "./fakes/fake-orchestrator.js";
import {
  type Backend,
  backends,
  createSandbox,
  errorBody,
  eventually,
  METRICS_TOKEN,
  POSTGRES_OFF,
  startTestAPI,
  type TestAPI,
} from "./helpers.js";

interface Detail {
  sandboxID: string;
  state: "running" | "paused";
  endAt: string;
  lifecycle: { onTimeout: string; autoResume: boolean };
}

interface ErrorBody {
  code: number;
  message: string;
}

for (const backend of backends) {
  describe(`pause and resume (${backend.name})`, () => {
    let t: TestAPI;
    before(async () => {
      t = await startTestAPI(backend);
    });
    after(() => t.close());

    const pause = (id: string, json: unknown = {}, key?: string) =>
      t.request(`/sandboxes/${id}/pause`, { method: "POST", json, key });
    const connect = (id: string, json: unknown = {}) =>
      t.request(`/v2/sandboxes/${id}/connect`, { method: "POST", json });
    const detail = async (id: string) => (await (await t.request(`/sandboxes/${id}`)).json()) as Detail;
    const record = (id: string) =>
      t.api.db.selectFrom("sandboxes").selectAll().where("sandbox_id", "=", id).executeTakeFirstOrThrow();
    const autoResume = (id: string): Promise<CatalogEntry | undefined> => t.api.catalog.resume!(id);
    const secondsLeft = (id: string) => (t.fake.sandboxes.get(id)!.endTime.getTime() - Date.now()) / 1000;
    const logMessages = async (id: string) => {
      const body = (await (await t.request(`/sandboxes/${id}/logs`)).json()) as {
        logEntries: Array<{ message: string; fields: Record<string, string> }>;
      };
      return body.logEntries.map((e) => e.message);
    };
    const paused = async (body: Record<string, unknown> = {}) => {
      const sbx = await createSandbox(t, body);
      assert.equal((await pause(sbx.sandboxID)).status, 204);
      return sbx;
    };
    const expectError = async (res: Response, status: number, message: RegExp) => {
      const body = (await res.json()) as ErrorBody;
      assert.equal(res.status, status, JSON.stringify(body));
      assert.equal(body.code, status, "the SDK reads body.code");
      assert.match(body.message, message);
    };

    test("pause: 204, the record paused with no address; a second pause is 409 (the SDK's false)", async () => {
      const sbx = await createSandbox(t);
      const id = sbx.sandboxID;
      const res = await pause(id);
      assert.equal(res.status, 204);
      assert.equal(await res.text(), "");
      assert.equal(t.fake.sandboxes.get(id)?.state, "paused");
      assert.deepEqual(t.fake.transitions.at(-1), { method: "pause", sandboxID: id, memory: undefined });
      assert.equal((await detail(id)).state, "paused");
      const row = await record(id);
      assert.equal(row.state, "paused");
      assert.equal(row.host_address, null);
      assert.deepEqual(await t.api.catalog.lookup(id), {
        sandboxID: id,
        state: "paused",
        hostAddress: "",
        envdAccessToken: sbx.envdAccessToken,
        autoResume: false,
      });

      const again = await pause(id);
      assert.equal(again.status, 409);
      assert.deepEqual(await errorBody(again), { code: 409, message: `sandbox '${id}' is already paused` });
      assert.equal(t.fake.count("pause", id), 1);
      assert.ok((await logMessages(id)).includes("sandbox paused"));
    });

    test("pause with memory: false asks the node for a files-only pause; no body is fine", async () => {
      const a = await createSandbox(t);
      assert.equal((await pause(a.sandboxID, { memory: false })).status, 204);
      assert.deepEqual(t.fake.transitions.at(-1), { method: "pause", sandboxID: a.sandboxID, memory: false });
      assert.equal(t.fake.sandboxes.get(a.sandboxID)?.pausedWithMemory, false);
      const b = await createSandbox(t);
      assert.equal((await t.request(`/sandboxes/${b.sandboxID}/pause`, { method: "POST" })).status, 204);
      assert.equal(t.fake.sandboxes.get(b.sandboxID)?.pausedWithMemory, true);
    });

    test("pause of an unknown, another team's or a killed sandbox is 404 (code 404)", async () => {
      await expectError(
        await pause("nosuchsandbox0000000"),
        404,
        /^sandbox 'nosuchsandbox0000000' not found$/,
      );
      const other = await t.newTeam("pause-other");
      const sbx = await createSandbox(t);
      await expectError(await pause(sbx.sandboxID, {}, other.apiKey), 404, /not found/);
      assert.equal(t.fake.sandboxes.get(sbx.sandboxID)?.state, "running", "untouched");
      assert.equal((await t.request(`/sandboxes/${sbx.sandboxID}`, { method: "DELETE" })).status, 204);
      await expectError(await pause(sbx.sandboxID), 404, /not found/);
      assert.equal(t.fake.count("pause", sbx.sandboxID), 0);
    });

    test("another team's paused sandbox is a 404 everywhere, and stays paused", async () => {
      const other = await t.newTeam("paused-other");
      const sbx = await paused();
      const attempts: Array<[string, string, unknown?]> = [
        ["POST", `/v2/sandboxes/${sbx.sandboxID}/connect`, {}],
        ["POST", `/sandboxes/${sbx.sandboxID}/connect`, { timeout: 60 }],
        ["POST", `/sandboxes/${sbx.sandboxID}/resume`, {}],
        ["POST", `/sandboxes/${sbx.sandboxID}/pause`, {}],
        ["POST", `/sandboxes/${sbx.sandboxID}/timeout`, { timeout: 60 }],
        ["DELETE", `/sandboxes/${sbx.sandboxID}`],
        ["GET", `/sandboxes/${sbx.sandboxID}`],
      ];
      for (const [method, path, json] of attempts) {
        await expectError(await t.request(path, { method, json, key: other.apiKey }), 404, /not found/);
      }
      assert.equal(t.fake.count("resume", sbx.sandboxID), 0);
      assert.equal(t.fake.sandboxes.get(sbx.sandboxID)?.state, "paused");
      assert.equal((await detail(sbx.sandboxID)).state, "paused");
    });

    test("pause between states is 409 and reaches no node: starting, being killed, being resumed", async () => {
      const creating = t.fake.holdNext("create");
      const create = t.request("/v2/sandboxes", { method: "POST", json: { templateID: "base" } });
      const starting = await creating.reached;
      await expectError(await pause(starting), 409, /is starting; try again/);
      creating.release();
      assert.equal((await create).status, 201);

      const sbx = await createSandbox(t);
      const deleting = t.fake.holdNext("delete");
      const kill = t.request(`/sandboxes/${sbx.sandboxID}`, { method: "DELETE" });
      await deleting.reached;
      await expectError(await pause(sbx.sandboxID), 409, /is being killed/);
      deleting.release();
      assert.equal((await kill).status, 204);

      const p = await paused();
      const resuming = t.fake.holdNext("resume");
      const resume = connect(p.sandboxID);
      await resuming.reached;
      await expectError(await pause(p.sandboxID), 409, /is being resumed/);
      // A kill waits for the resume this process has under way, then kills.
      const killDuringResume = t.request(`/sandboxes/${p.sandboxID}`, { method: "DELETE" });
      assert.equal((await detail(p.sandboxID)).state, "paused", "shown paused until the node answers");
      assert.equal((await t.api.catalog.lookup(p.sandboxID))?.state, "starting");
      resuming.release();
      assert.equal((await resume).status, 201);
      assert.equal((await killDuringResume).status, 204);
      assert.equal(t.fake.sandboxes.get(p.sandboxID), undefined, "killed on the node after the resume");
      assert.equal(t.fake.count("pause", p.sandboxID), 1);
    });

    test("a new end time during a resume waits for it (the resume sets an end of its own), then applies", async () => {
      const p = await paused();
      const resuming = t.fake.holdNext("resume");
      const resume = connect(p.sandboxID, { timeout: 30 });
      await resuming.reached;
      let answered = false;
      const setTimeout = t
        .request(`/sandboxes/${p.sandboxID}/timeout`, { method: "POST", json: { timeout: 600 } })
        .then((res) => {
          answered = true;
          return res;
        });
      await new Promise((r) => globalThis.setTimeout(r, 100));
      assert.equal(answered, false, "it waits for the resume");
      resuming.release();
      assert.equal((await resume).status, 201);
      assert.equal((await setTimeout).status, 204);
      assert.ok(secondsLeft(p.sandboxID) > 590, "the later call's end holds on the node");
      assert.ok(new Date((await detail(p.sandboxID)).endAt).getTime() - Date.now() > 590_000);
    });

    test("two concurrent pauses: one 204, the other 409; one Pause call", async () => {
      const sbx = await createSandbox(t);
      const held = t.fake.holdNext("pause");
      const first = pause(sbx.sandboxID);
      await held.reached;
      assert.equal((await detail(sbx.sandboxID)).state, "running", "shown running until the node answers");
      assert.equal((await t.api.catalog.lookup(sbx.sandboxID))?.state, "pausing");
      await expectError(await pause(sbx.sandboxID), 409, /is being paused; try again/);
      held.release();
      assert.equal((await first).status, 204);
      assert.equal(t.fake.count("pause", sbx.sandboxID), 1);

      const other = await createSandbox(t);
      const statuses = await Promise.all([
        pause(other.sandboxID),
        pause(other.sandboxID),
        pause(other.sandboxID),
      ]);
      assert.deepEqual(statuses.map((r) => r.status).sort(), [204, 409, 409]);
      assert.equal(t.fake.count("pause", other.sandboxID), 1);
    });

    test("a failed Pause leaves it running; one the node made first reads as already paused", async () => {
      const a = await createSandbox(t);
      t.fake.failNext("pause", Code.Internal, "checkpoint failed");
      await expectError(await pause(a.sandboxID), 500, /^internal error$/);
      assert.equal((await detail(a.sandboxID)).state, "running");
      assert.equal((await t.api.catalog.lookup(a.sandboxID))?.state, "running");
      assert.equal((await pause(a.sandboxID)).status, 204);

      // A pause the node tried and gave up on, the sandbox still running (envd's /freeze timed
      // out): 503 with the node's reason, never a bare 500.
      const d = await createSandbox(t);
      t.fake.failNext(
        "pause",
        Code.Unavailable,
        "pausing sandbox failed (envd /freeze timed out); it is still running",
      );
      await expectError(await pause(d.sandboxID), 503, /envd \/freeze timed out.*still running/);
      assert.equal((await detail(d.sandboxID)).state, "running");
      assert.equal((await pause(d.sandboxID)).status, 204);

      const b = await createSandbox(t);
      t.fake.pauseOutOfBand(b.sandboxID, { silently: true });
      await expectError(await pause(b.sandboxID), 409, /already paused/);
      assert.equal((await record(b.sandboxID)).state, "paused");

      const c = await createSandbox(t);
      t.fake.dropSilently(c.sandboxID);
      await expectError(await pause(c.sandboxID), 404, /not found/);
      assert.equal((await record(c.sandboxID)).state, "killed");
    });

    test("connect resumes a paused sandbox: 201, the same token, a new address, a fresh end", async () => {
      const sbx = await paused({ timeout: 60 });
      const id = sbx.sandboxID;
      const res = await connect(id);
      assert.equal(res.status, 201);
      const body = (await res.json()) as Record<string, unknown>;
      assert.equal(body.sandboxID, id);
      assert.equal(body.envdAccessToken, sbx.envdAccessToken);
      assert.equal(body.envdVersion, "0.6.13");
      const onNode = t.fake.sandboxes.get(id)!;
      assert.equal(onNode.state, "running");
      assert.notEqual(onNode.hostAddress, "127.0.0.1", "a resume moves the sandbox");
      assert.deepEqual(t.fake.transitions.at(-1), { method: "resume", sandboxID: id, reboot: false });
      assert.ok(secondsLeft(id) > 290 && secondsLeft(id) <= 300, "v2 default: 300 s");
      assert.equal((await record(id)).host_address, onNode.hostAddress);
      assert.equal((await t.api.catalog.lookup(id))?.hostAddress, onNode.hostAddress);
      assert.equal((await t.api.catalog.lookup(id))?.state, "running");
      assert.equal((await detail(id)).state, "running");
      assert.ok((await logMessages(id)).includes("sandbox resumed"));
      assert.equal((await connect(id)).status, 200, "running: 200");
      assert.equal(t.fake.count("resume", id), 1);

      const firstHost = onNode.hostAddress;
      assert.equal((await pause(id)).status, 204);
      const reboot = await connect(id, { timeout: 30, memory: false });
      assert.equal(reboot.status, 201);
      assert.deepEqual(t.fake.transitions.at(-1), { method: "resume", sandboxID: id, reboot: true });
      assert.ok(secondsLeft(id) > 25 && secondsLeft(id) <= 30);
      assert.notEqual(t.fake.sandboxes.get(id)!.hostAddress, firstHost, "a new address on every resume");

      assert.equal((await pause(id)).status, 204);
      const v1 = await t.request(`/sandboxes/${id}/connect`, { method: "POST", json: { timeout: 120 } });
      assert.equal(v1.status, 201);
      assert.ok(secondsLeft(id) > 115 && secondsLeft(id) <= 120);
    });

    test("concurrent connects of a paused sandbox all succeed with one Resume", async () => {
      const a = await paused();
      const held = t.fake.holdNext("resume");
      const first = connect(a.sandboxID, { timeout: 60 });
      await held.reached;
      const second = connect(a.sandboxID, { timeout: 600 });
      const third = t.request(`/sandboxes/${a.sandboxID}/connect`, { method: "POST", json: { timeout: 30 } });
      // Time for them to find the resume under way and join it (201); one that is later finds the
      // sandbox running (200): either way, no second Resume.
      await new Promise((r) => setTimeout(r, 100));
      held.release();
      const results = await Promise.all([first, second, third]);
      assert.equal(results[0]!.status, 201);
      for (const res of results) assert.ok(res.status === 201 || res.status === 200, String(res.status));
      assert.equal(t.fake.count("resume", a.sandboxID), 1);
      assert.ok(secondsLeft(a.sandboxID) > 590, "the longest timeout asked for wins");

      const b = await paused();
      const all = await Promise.all([connect(b.sandboxID), connect(b.sandboxID), connect(b.sandboxID)]);
      for (const res of all) assert.ok(res.status === 200 || res.status === 201, String(res.status));
      assert.ok(all.some((r) => r.status === 201));
      assert.equal(t.fake.count("resume", b.sandboxID), 1);
    });

    test("connect during a pause waits for it, then resumes", async () => {
      const sbx = await createSandbox(t);
      const held = t.fake.holdNext("pause");
      const pausing = pause(sbx.sandboxID);
      await held.reached;
      const connecting = connect(sbx.sandboxID);
      await new Promise((r) => setTimeout(r, 50));
      held.release();
      assert.equal((await pausing).status, 204);
      assert.equal((await connecting).status, 201);
      assert.equal(t.fake.count("pause", sbx.sandboxID), 1);
      assert.equal(t.fake.count("resume", sbx.sandboxID), 1);
      assert.equal((await detail(sbx.sandboxID)).state, "running");
    });

    test("a busy node: connect answers 429 with Retry-After; the sandbox stays paused", async () => {
      const sbx = await paused();
      t.fake.failNext("resume", Code.ResourceExhausted, "node busy: 16 sandboxes already starting");
      const busy = await connect(sbx.sandboxID);
      assert.equal(busy.headers.get("retry-after"), "1");
      await expectError(busy, 429, /cannot resume it now.*retry/);
      assert.equal((await detail(sbx.sandboxID)).state, "paused");
      assert.equal((await t.api.catalog.lookup(sbx.sandboxID))?.state, "paused");

      t.fake.failNext("resume", Code.Unavailable, "connection refused");
      await expectError(await connect(sbx.sandboxID), 429, /unavailable.*retry/);
      assert.equal((await detail(sbx.sandboxID)).state, "paused");
      assert.equal((await connect(sbx.sandboxID)).status, 201);

      const lost = await paused();
      t.fake.dropSilently(lost.sandboxID);
      await expectError(await connect(lost.sandboxID), 404, /not found/);
      assert.equal((await record(lost.sandboxID)).state, "killed");
    });

    test("deprecated resume: 201 for a paused sandbox, 409 for a running one", async () => {
      const sbx = await createSandbox(t);
      const resume = (json: unknown = {}) =>
        t.request(`/sandboxes/${sbx.sandboxID}/resume`, { method: "POST", json });
      await expectError(await resume(), 409, new RegExp(`^sandbox '${sbx.sandboxID}' is already running$`));
      assert.equal((await pause(sbx.sandboxID)).status, 204);
      const res = await resume();
      assert.equal(res.status, 201);
      assert.equal(((await res.json()) as { sandboxID: string }).sandboxID, sbx.sandboxID);
      assert.ok(secondsLeft(sbx.sandboxID) > 10 && secondsLeft(sbx.sandboxID) <= 15, "default 15 s");

      assert.equal((await pause(sbx.sandboxID)).status, 204);
      await expectError(await resume({ autoPause: true }), 501, /autoPause/);
      assert.equal((await detail(sbx.sandboxID)).state, "paused");
      assert.equal((await resume({ timeout: 120, autoPause: false })).status, 201);
      assert.ok(secondsLeft(sbx.sandboxID) > 115);
      await expectError(
        await t.request("/sandboxes/nosuchsandbox0000000/resume", { method: "POST", json: {} }),
        404,
        /not found/,
      );
    });

    test("kill of a paused sandbox removes it from its node: 204, then 404 everywhere", async () => {
      const sbx = await paused();
      assert.equal((await t.request(`/sandboxes/${sbx.sandboxID}`, { method: "DELETE" })).status, 204);
      assert.equal(t.fake.sandboxes.has(sbx.sandboxID), false);
      assert.equal(t.fake.count("delete", sbx.sandboxID), 1);
      assert.equal((await t.request(`/sandboxes/${sbx.sandboxID}`, { method: "DELETE" })).status, 404);
      assert.equal((await t.request(`/sandboxes/${sbx.sandboxID}`)).status, 404);
      await expectError(await connect(sbx.sandboxID), 404, /not found/);
      assert.equal(await t.api.catalog.lookup(sbx.sandboxID), undefined);
    });

    test("timeout and refresh of a paused sandbox are recorded, not sent; its resume sets a fresh end", async () => {
      const sbx = await paused();
      const sent = t.fake.count("updateEndTime", sbx.sandboxID);
      const res = await t.request(`/sandboxes/${sbx.sandboxID}/timeout`, {
        method: "POST",
        json: { timeout: 1000 },
      });
      assert.equal(res.status, 204);
      const shown = await detail(sbx.sandboxID);
      assert.equal(shown.state, "paused");
      assert.ok(Date.parse(shown.endAt) - Date.now() > 990_000);
      const refresh = await t.request(`/sandboxes/${sbx.sandboxID}/refreshes`, {
        method: "POST",
        json: { duration: 2000 },
      });
      assert.equal(refresh.status, 204);
      assert.ok(Date.parse((await detail(sbx.sandboxID)).endAt) - Date.now() > 1_990_000);
      assert.equal(t.fake.count("updateEndTime", sbx.sandboxID), sent, "the node was not asked");

      assert.equal((await connect(sbx.sandboxID, { timeout: 60 })).status, 201);
      assert.ok(secondsLeft(sbx.sandboxID) <= 60, "resume sets the end from connect's timeout");
      assert.equal(t.fake.count("updateEndTime", sbx.sandboxID), sent, "and needs no second call");
    });

    test("create passes autoPause and autoPauseMemory to the node; the detail shows the lifecycle", async () => {
      const plain = await createSandbox(t);
      assert.equal(t.fake.sandboxes.get(plain.sandboxID)!.config.autoPause, false);
      assert.deepEqual((await detail(plain.sandboxID)).lifecycle, { onTimeout: "kill", autoResume: false });

      const auto = await createSandbox(t, { autoPause: true });
      const config = t.fake.sandboxes.get(auto.sandboxID)!.config;
      assert.equal(config.autoPause, true);
      assert.equal(config.autoPauseMemory, true);
      assert.deepEqual((await detail(auto.sandboxID)).lifecycle, { onTimeout: "pause", autoResume: false });

      const filesOnly = await createSandbox(t, { autoPause: true, autoPauseMemory: false });
      assert.equal(t.fake.sandboxes.get(filesOnly.sandboxID)!.config.autoPauseMemory, false);

      const resumable = await createSandbox(t, { autoPause: true, autoResume: { enabled: true } });
      assert.deepEqual((await detail(resumable.sandboxID)).lifecycle, {
        onTimeout: "pause",
        autoResume: true,
      });
      assert.equal((await t.api.catalog.lookup(resumable.sandboxID))?.autoResume, true);

      const v1 = await t.request("/sandboxes", {
        method: "POST",
        json: { templateID: "base", timeout: 60, autoPause: true, autoResume: { enabled: true } },
      });
      assert.equal(v1.status, 201);
      const v1ID = ((await v1.json()) as { sandboxID: string }).sandboxID;
      assert.equal(t.fake.sandboxes.get(v1ID)!.config.autoPause, true);
      assert.equal((await record(v1ID)).timeout_seconds, 60);
    });

    test("at its end time an autoPause sandbox is paused by its node, not killed; connect resumes it", async () => {
      const sbx = await createSandbox(t, { autoPause: true, timeout: 1 });
      await eventually(async () => (await detail(sbx.sandboxID)).state === "paused");
      const row = await record(sbx.sandboxID);
      assert.equal(row.state, "paused");
      assert.equal(row.host_address, null);
      assert.equal((await t.api.catalog.lookup(sbx.sandboxID))?.state, "paused");
      assert.equal(t.fake.count("pause", sbx.sandboxID), 0, "the node paused it on its own");
      assert.ok((await logMessages(sbx.sandboxID)).includes("sandbox paused"));
      assert.equal((await connect(sbx.sandboxID)).status, 201);
      assert.equal((await detail(sbx.sandboxID)).state, "running");
    });

    test("a pause or resume made by someone else reaches the record, with the node's new address", async () => {
      const sbx = await createSandbox(t);
      t.fake.pauseOutOfBand(sbx.sandboxID);
      await eventually(async () => (await detail(sbx.sandboxID)).state === "paused");
      t.fake.resumeOutOfBand(sbx.sandboxID);
      const host = t.fake.sandboxes.get(sbx.sandboxID)!.hostAddress;
      await eventually(async () => (await detail(sbx.sandboxID)).state === "running");
      assert.equal((await record(sbx.sandboxID)).host_address, host);
      assert.equal((await t.api.catalog.lookup(sbx.sandboxID))?.hostAddress, host);
    });

    test("the proxy's auto-resume: one Resume for the sandbox's own lifetime; undefined when it cannot", async () => {
      const sbx = await paused({ autoPause: true, autoResume: { enabled: true }, timeout: 120 });
      const entry = await autoResume(sbx.sandboxID);
      const host = t.fake.sandboxes.get(sbx.sandboxID)!.hostAddress;
      assert.deepEqual(entry, {
        sandboxID: sbx.sandboxID,
        state: "running",
        hostAddress: host,
        envdAccessToken: sbx.envdAccessToken,
        autoResume: true,
      });
      assert.ok(
        secondsLeft(sbx.sandboxID) > 115 && secondsLeft(sbx.sandboxID) <= 120,
        "its create's timeout",
      );
      assert.equal((await autoResume(sbx.sandboxID))?.state, "running", "running already: as it is");
      assert.equal(t.fake.count("resume", sbx.sandboxID), 1);

      assert.equal((await pause(sbx.sandboxID)).status, 204);
      const held = t.fake.holdNext("resume");
      const viaProxy = autoResume(sbx.sandboxID);
      await held.reached;
      const viaConnect = connect(sbx.sandboxID);
      const again = autoResume(sbx.sandboxID);
      await new Promise((r) => setTimeout(r, 100));
      held.release();
      assert.equal((await viaProxy)?.state, "running");
      assert.equal((await again)?.state, "running");
      assert.ok([200, 201].includes((await viaConnect).status));
      assert.equal(t.fake.count("resume", sbx.sandboxID), 2, "one more Resume for the three");

      assert.equal((await pause(sbx.sandboxID)).status, 204);
      t.fake.failNext("resume", Code.ResourceExhausted, "busy");
      assert.equal(await autoResume(sbx.sandboxID), undefined, "busy node");
      assert.equal((await detail(sbx.sandboxID)).state, "paused");

      const plain = await paused();
      assert.equal(await autoResume(plain.sandboxID), undefined, "no autoResume");
      assert.equal(t.fake.count("resume", plain.sandboxID), 0);
      assert.equal(await autoResume("nosuchsandbox0000000"), undefined);
    });

    test("lists: state=paused lists paused ones, none lists both; transitions show where they started", async () => {
      const team = await t.newTeam("pause-lists");
      const running = await createSandbox(t, {}, team.apiKey);
      const sleeping = await createSandbox(t, {}, team.apiKey);
      assert.equal((await pause(sleeping.sandboxID, {}, team.apiKey)).status, 204);
      const list = async (query: string) => {
        const res = await t.request(`/v2/sandboxes${query}`, { key: team.apiKey });
        const body = (await res.json()) as Array<{ sandboxID: string; state: string }>;
        return {
          items: body.map((s) => `${s.sandboxID}:${s.state}`).sort(),
          totalRunning: res.headers.get("X-Total-Running"),
        };
      };
      const r = `${running.sandboxID}:running`;
      const p = `${sleeping.sandboxID}:paused`;
      assert.deepEqual(await list("?state=paused"), { items: [p], totalRunning: null });
      assert.deepEqual(await list("?state=running"), { items: [r], totalRunning: "1" });
      assert.deepEqual(await list(""), { items: [p, r].sort(), totalRunning: "1" });
      const v1 = (await (await t.request("/sandboxes", { key: team.apiKey })).json()) as Array<{
        sandboxID: string;
      }>;
      assert.deepEqual(
        v1.map((s) => s.sandboxID),
        [running.sandboxID],
      );

      const pausing = t.fake.holdNext("pause");
      const pauseRunning = pause(running.sandboxID, {}, team.apiKey);
      await pausing.reached;
      const resuming = t.fake.holdNext("resume");
      const resumeSleeping = t.request(`/v2/sandboxes/${sleeping.sandboxID}/connect`, {
        method: "POST",
        json: {},
        key: team.apiKey,
      });
      await resuming.reached;
      assert.deepEqual(await list("?state=running"), { items: [r], totalRunning: "1" });
      assert.deepEqual(await list("?state=paused"), { items: [p], totalRunning: null });
      pausing.release();
      resuming.release();
      assert.equal((await pauseRunning).status, 204);
      assert.equal((await resumeSleeping).status, 201);
      assert.deepEqual(await list(""), {
        items: [`${running.sandboxID}:paused`, `${sleeping.sandboxID}:running`].sort(),
        totalRunning: "1",
      });
      const metrics = await (
        await t.request("/metrics", { key: null, headers: { authorization: `Bearer ${METRICS_TOKEN}` } })
      ).text();
      assert.match(metrics, /moat_api_sandboxes\{state="paused"\} \d+/);
      assert.match(metrics, /moat_api_sandboxes\{state="pausing"\} 0/);
    });
  });
}

const postgres = backends.find((b) => b.name === "postgres");

describe("pause and resume from two API processes on one database (postgres)", {
  skip: postgres ? false : POSTGRES_OFF,
}, () => {
  const fake = new FakeOrchestrator();
  let database: Awaited<ReturnType<Backend["database"]>>;
  let one: API;
  let two: API;
  let apiKey: string;
  before(async () => {
    database = await postgres!.database();
    const open = () =>
      openAPI({
        dataDir: "/nonexistent-moat-test",
        databaseURL: database.url,
        orchestrators: [{ id: "node-1", transport: fake.transport() }],
        logger: createNoopLogger(),
      });
    one = await open();
    two = await open();
    apiKey = (await one.bootstrap()).apiKey!;
  });
  after(async () => {
    await one.close();
    await two.close();
    fake.close();
    await database.drop();
  });

  const call = (api: API, path: string, json: unknown = {}) =>
    api.app.request(path, {
      method: "POST",
      headers: { "X-API-Key": apiKey, "Content-Type": "application/json" },
      body: JSON.stringify(json),
    });
  const create = async () => {
    const res = await call(one, "/v2/sandboxes", { templateID: "base" });
    assert.equal(res.status, 201);
    return ((await res.json()) as { sandboxID: string }).sandboxID;
  };

  test("concurrent pauses through both: one 204, one 409, one Pause call", async () => {
    for (let i = 0; i < 5; i++) {
      const id = await create();
      const [a, b] = await Promise.all([
        call(one, `/sandboxes/${id}/pause`),
        call(two, `/sandboxes/${id}/pause`),
      ]);
      assert.deepEqual([a.status, b.status].sort(), [204, 409]);
      assert.equal(((await (a.status === 409 ? a : b).json()) as ErrorBody).code, 409);
      assert.equal(fake.count("pause", id), 1);
    }
  });

  test("a resume under way in one process is a 409 in the other, for pause and connect", async () => {
    const id = await create();
    assert.equal((await call(one, `/sandboxes/${id}/pause`)).status, 204);
    const held = fake.holdNext("resume");
    const resuming = call(one, `/v2/sandboxes/${id}/connect`);
    await held.reached;
    const pause = await call(two, `/sandboxes/${id}/pause`);
    assert.equal(pause.status, 409);
    assert.match(((await pause.json()) as ErrorBody).message, /being resumed/);
    assert.equal((await call(two, `/v2/sandboxes/${id}/connect`)).status, 409);
    held.release();
    assert.equal((await resuming).status, 201);
    assert.equal((await call(two, `/v2/sandboxes/${id}/connect`)).status, 200);
    assert.equal(fake.count("resume", id), 1);
  });
});
