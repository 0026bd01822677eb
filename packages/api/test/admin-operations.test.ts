import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { backends, createSandbox, startTestAPI } from "./helpers.js";
import {
  requestBuild,
  startTemplateTestAPI,
  type TemplateTestAPI,
  waitForBuild,
} from "./template-helpers.js";

const ADMIN_TOKEN = "admin-token-for-tests-0123456789";

for (const backend of backends) {
  describe(`admin routes over teams, sandboxes, builds and keys (${backend.name})`, () => {
    let t: TemplateTestAPI;
    before(async () => {
      t = await startTemplateTestAPI(backend, { adminToken: ADMIN_TOKEN });
    });
    after(() => t.close());

    const admin = (path: string, init: RequestInit & { json?: unknown } = {}) =>
      t.request(path, { ...init, key: null, headers: { "X-Admin-Token": ADMIN_TOKEN, ...init.headers } });

    test("every admin route needs the admin token; a team's API key is not it", async () => {
      for (const [method, path] of [
        ["GET", "/admin/teams"],
        ["GET", "/admin/status"],
        ["GET", "/admin/sandboxes/running-counts"],
        ["POST", `/admin/teams/${t.teamID}/sandboxes/kill`],
        ["POST", `/admin/teams/${t.teamID}/builds/cancel`],
        ["GET", `/admin/teams/${t.teamID}/api-keys`],
        ["DELETE", `/admin/teams/${t.teamID}/api-keys/x`],
      ] as const) {
        assert.equal((await t.request(path, { method })).status, 401, `${method} ${path} with an API key`);
        const wrong = await t.request(path, { method, key: null, headers: { "X-Admin-Token": "wrong" } });
        assert.equal(wrong.status, 401, `${method} ${path} with a wrong token`);
      }
      const create = await t.request(`/admin/teams/${t.teamID}/api-keys`, {
        method: "POST",
        json: { name: "x" },
      });
      assert.equal(create.status, 401);
    });

    test("teams, the overview and running counts over every team", async () => {
      const other = await t.newTeam("admin-other");
      const mine = await createSandbox(t);
      await createSandbox(t, {}, other.apiKey);
      await createSandbox(t, {}, other.apiKey);
      const teams = (await (await admin("/admin/teams")).json()) as Array<{
        teamID: string;
        name: string;
        isDefault: boolean;
        apiKeys: number;
        sandboxes: Record<string, number>;
      }>;
      const def = teams.find((x) => x.teamID === t.teamID);
      assert.equal(def?.isDefault, true);
      assert.equal(def?.apiKeys, 1);
      assert.equal(teams.find((x) => x.teamID === other.teamID)?.sandboxes.running, 2);
      const counts = (await (await admin("/admin/sandboxes/running-counts")).json()) as Record<
        string,
        number
      >;
      assert.equal(counts[other.teamID], 2);
      assert.ok((counts[t.teamID] ?? 0) >= 1);
      const status = (await (await admin("/admin/status")).json()) as {
        teams: number;
        sandboxes: Record<string, number>;
      };
      assert.ok(status.teams >= 2);
      assert.ok((status.sandboxes.running ?? 0) >= 3);
      await t.request(`/sandboxes/${mine.sandboxID}`, { method: "DELETE" });
    });

    test("killing a team's sandboxes kills those, running or paused, and no other team's", async () => {
      const victim = await t.newTeam("admin-victim");
      const bystander = await t.newTeam("admin-bystander");
      const a = await createSandbox(t, {}, victim.apiKey);
      const b = await createSandbox(t, {}, victim.apiKey);
      const pause = await t.request(`/sandboxes/${b.sandboxID}/pause`, {
        method: "POST",
        key: victim.apiKey,
      });
      assert.equal(pause.status, 204);
      const safe = await createSandbox(t, {}, bystander.apiKey);
      const res = await admin(`/admin/teams/${victim.teamID}/sandboxes/kill`, { method: "POST" });
      assert.equal(res.status, 200);
      assert.deepEqual(await res.json(), { killedCount: 2, failedCount: 0 });
      for (const id of [a.sandboxID, b.sandboxID]) {
        assert.equal((await t.request(`/sandboxes/${id}`, { key: victim.apiKey })).status, 404);
      }
      assert.equal((await t.request(`/sandboxes/${safe.sandboxID}`, { key: bystander.apiKey })).status, 200);
      assert.equal((await admin("/admin/teams/no-such-team/sandboxes/kill", { method: "POST" })).status, 404);
    });

    test("cancelling a team's builds ends its waiting and running builds, and no other team's", async () => {
      const team = await t.newTeam("admin-builds");
      const waiting = await requestBuild(t, { name: "waits" }, team.apiKey);
      const hold = t.fake.templates.holdNext();
      const running = await requestBuild(t, { name: "runs" }, team.apiKey);
      const start = await t.request(`/v2/templates/${running.templateID}/builds/${running.buildID}`, {
        method: "POST",
        json: { fromImage: "e2bdev/base" },
        key: team.apiKey,
      });
      assert.equal(start.status, 202);
      assert.equal(await hold.reached, running.buildID);
      const othersBuild = await requestBuild(t, { name: "not-mine" });
      const res = await admin(`/admin/teams/${team.teamID}/builds/cancel`, { method: "POST" });
      assert.equal(res.status, 200);
      assert.deepEqual(await res.json(), { cancelledCount: 2, failedCount: 0 });
      assert.ok(t.fake.templates.cancelled.includes(running.buildID), "the node's build was cancelled");
      hold.release();
      for (const ids of [waiting, running]) {
        const info = await waitForBuildAs(t, ids, team.apiKey);
        assert.equal(info.status, "error");
        assert.match(info.reason?.message ?? "", /cancelled by the operator/);
      }
      const status = await t.request(
        `/templates/${othersBuild.templateID}/builds/${othersBuild.buildID}/status`,
      );
      assert.equal(((await status.json()) as { status: string }).status, "waiting");
    });

    test("the operator makes and revokes a team's keys, its last one too; keys of another team are 404", async () => {
      const team = await t.newTeam("admin-keys");
      const other = await t.newTeam("admin-keys-other");
      const created = await admin(`/admin/teams/${team.teamID}/api-keys`, {
        method: "POST",
        json: { name: "ops" },
      });
      assert.equal(created.status, 201);
      const key = (await created.json()) as { id: string; key: string; createdBy: unknown };
      assert.equal(key.createdBy, null);
      assert.equal((await t.request("/v2/sandboxes", { key: key.key })).status, 200);
      const listed = (await (await admin(`/admin/teams/${team.teamID}/api-keys`)).json()) as Array<{
        id: string;
      }>;
      assert.equal(listed.length, 2);
      assert.equal(
        (await admin(`/admin/teams/${other.teamID}/api-keys/${key.id}`, { method: "DELETE" })).status,
        404,
        "a key is revoked only under its own team",
      );
      for (const { id } of listed) {
        assert.equal(
          (await admin(`/admin/teams/${team.teamID}/api-keys/${id}`, { method: "DELETE" })).status,
          204,
        );
      }
      assert.equal((await t.request("/v2/sandboxes", { key: key.key })).status, 401);
      assert.equal((await t.request("/v2/sandboxes", { key: team.apiKey })).status, 401);
      assert.equal((await t.request("/v2/sandboxes", { key: other.apiKey })).status, 200);
      const bad = await admin(`/admin/teams/${team.teamID}/api-keys`, { method: "POST", json: { name: "" } });
      assert.equal(bad.status, 400);
      assert.equal(
        (await admin("/admin/teams/no-such-team/api-keys", { method: "POST", json: { name: "x" } })).status,
        404,
      );
    });
  });
}

describe("GET /nodes with a node in this process (moat up)", () => {
  test("its load and warm pool are asked for when shown; a failing sample leaves them out", async () => {
    let fail = false;
    const t = await startTestAPI(
      backends[0]!,
      { adminToken: ADMIN_TOKEN },
      {
        sampleLoad: async () => {
          if (fail) throw new Error("no /proc");
          return {
            capacity: { cpus: 2, memoryMB: 4096 },
            load: { cpuPercent: 12.5, memoryUsedMB: 1024, sandboxes: 1, starting: 0, poolReady: 2 },
          };
        },
      },
    );
    try {
      await t.api.refreshNodes();
      const nodes = async () =>
        (await (
          await t.request("/nodes", { key: null, headers: { "X-Admin-Token": ADMIN_TOKEN } })
        ).json()) as Array<{
          nodeID: string;
          capacity: unknown;
          load: { poolReady: number } | null;
        }>;
      const [node] = await nodes();
      assert.equal(node?.nodeID, "node-1");
      assert.equal(node?.load?.poolReady, 2);
      fail = true;
      const [after] = await nodes();
      assert.equal(after?.nodeID, "node-1");
    } finally {
      await t.close();
    }
  });
});

/** waitForBuild with another team's key. */
async function waitForBuildAs(t: TemplateTestAPI, ids: { templateID: string; buildID: string }, key: string) {
  const request = t.request.bind(t);
  return waitForBuild({ ...t, request: (path, init = {}) => request(path, { ...init, key }) }, ids);
}
