/**
 * What the SDK and the CLI do with templates besides building them: name checks
 * (Template.exists), lists, a template with its builds, publishing, tags and deletion; and what
 * another team sees of them.
 */
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { backends, createSandbox, errorBody } from "./helpers.js";
import {
  buildTemplate,
  expectError,
  requestBuild,
  startTemplateTestAPI,
  type TemplateTestAPI,
} from "./template-helpers.js";

for (const backend of backends) {
  describe(`template management (${backend.name})`, () => {
    let t: TemplateTestAPI;
    let other: { teamID: string; apiKey: string };
    before(async () => {
      t = await startTemplateTestAPI(backend);
      other = await t.newTeam("other");
    });
    after(() => t.close());

    test("aliases: 200 for the team's own and public ones; another team's private one is a 404 like a missing one", async () => {
      const built = await buildTemplate(t, "named:v1");
      const alias = (name: string, key?: string) =>
        t.request(`/templates/aliases/${encodeURIComponent(name)}`, { key });
      const own = await alias("named");
      assert.equal(own.status, 200);
      assert.deepEqual(await own.json(), { templateID: built.templateID, public: false });
      assert.equal((await alias("default/named")).status, 200, "namespaced, %2F in the path");
      assert.equal((await alias("named:v1")).status, 200);
      await expectError(await alias("named:v9"), 404, /no ready build tagged 'v9'/);
      await expectError(await alias("nosuch"), 404);
      await expectError(await alias("Bad Name!"), 400);
      assert.deepEqual(await (await alias("base")).json(), { templateID: "base", public: true });

      // Another team learns nothing of a private template: its name and id answer as missing ones.
      // Bodies without their request ids, which differ from answer to answer.
      const missing = async (name: string) => errorBody(await alias(name, other.apiKey));
      for (const [theirs, absent] of [
        ["default/named", "default/nosuch"],
        [built.templateID, "zzzzzzzzzzzzzzzzzzzz"],
        ["default/named:v1", "default/nosuch:v1"],
      ] as const) {
        const res = await alias(theirs, other.apiKey);
        const body = (await errorBody(res)) as { code: number; message: string };
        assert.equal(res.status, 404, theirs);
        assert.deepEqual(
          { ...body, message: body.message.replace(theirs, "X") },
          {
            ...(await missing(absent)),
            message: ((await missing(absent)) as { message: string }).message.replace(absent, "X"),
          },
          `${theirs} reads as ${absent}`,
        );
      }
      // A bare name is the caller's own.
      await expectError(await alias("named", other.apiKey), 404);
      await t.request(`/v2/templates/${built.templateID}`, { method: "PATCH", json: { public: true } });
      assert.deepEqual(await (await alias("default/named", other.apiKey)).json(), {
        templateID: built.templateID,
        public: true,
      });
      assert.equal((await alias(built.templateID, other.apiKey)).status, 200, "a public one by id too");
    });

    test("lists: v1 all at once, v2 paged with X-Next-Token; each with its latest build's status", async () => {
      const team = await t.newTeam("lister");
      const ready = await buildTemplate(
        { ...t, request: (p, i = {}) => t.request(p, { ...i, key: team.apiKey }) },
        "ready-one",
        undefined,
        { cpuCount: 1, memoryMB: 512 },
      );
      const waiting = await requestBuild(t, { name: "waiting-one" }, team.apiKey);
      const third = await requestBuild(t, { name: "third" }, team.apiKey);

      const v1 = await t.request(`/templates?teamID=${team.teamID}`, { key: team.apiKey });
      assert.equal(v1.status, 200);
      const all = (await v1.json()) as Array<Record<string, unknown>>;
      assert.deepEqual(
        all.map((x) => x.templateID),
        [third.templateID, waiting.templateID, ready.templateID],
        "newest first",
      );
      const first = all[2]!;
      assert.equal(first.buildID, ready.buildID);
      assert.equal(first.buildStatus, "ready");
      assert.equal(first.envdVersion, "0.6.13");
      assert.equal(first.cpuCount, 1);
      assert.equal(first.memoryMB, 512);
      assert.equal(first.diskSizeMB, 10240, "the deployment's disk size (MOAT_DISK_SIZE_MB)");
      assert.equal(first.public, false);
      assert.deepEqual(first.names, ["lister/ready-one"]);
      assert.deepEqual(first.aliases, ["ready-one"]);
      assert.equal(first.createdBy, null);
      assert.equal(first.lastSpawnedAt, null);
      assert.equal(first.spawnCount, 0);
      assert.equal(first.buildCount, 1);
      assert.match(first.createdAt as string, /^\d{4}-/);
      assert.equal(all[1]!.buildStatus, "waiting");
      assert.equal(all[1]!.buildID, waiting.buildID);
      assert.equal(all[1]!.envdVersion, "");
      await expectError(
        await t.request(`/templates?teamID=${t.teamID}`, { key: team.apiKey }),
        400,
        /teamID/,
      );

      const seen: string[] = [];
      let token: string | null = null;
      let pages = 0;
      do {
        const res: Response = await t.request(
          `/v2/templates?limit=2${token ? `&nextToken=${encodeURIComponent(token)}` : ""}`,
          { key: team.apiKey },
        );
        assert.equal(res.status, 200);
        seen.push(...((await res.json()) as Array<{ templateID: string }>).map((x) => x.templateID));
        token = res.headers.get("X-Next-Token");
        pages++;
      } while (token);
      assert.equal(pages, 2);
      assert.deepEqual(
        seen,
        all.map((x) => x.templateID),
      );
      await expectError(await t.request("/v2/templates?nextToken=garbage", { key: team.apiKey }), 400);
    });

    test("a template with its builds, paged; another team's is a 404", async () => {
      const first = await buildTemplate(t, "history", undefined, { cpuCount: 1 });
      const second = await buildTemplate(t, "history");
      const third = await requestBuild(t, { name: "history" });
      const res = await t.request(`/templates/history?limit=2`);
      assert.equal(res.status, 200);
      const body = (await res.json()) as Record<string, unknown> & { builds: Array<Record<string, unknown>> };
      assert.equal(body.templateID, first.templateID);
      assert.deepEqual(body.names, ["default/history"]);
      assert.deepEqual(body.aliases, ["history"]);
      assert.equal(body.public, false);
      assert.deepEqual(
        body.builds.map((b) => [b.buildID, b.status]),
        [
          [third.buildID, "waiting"],
          [second.buildID, "ready"],
        ],
      );
      assert.equal(body.builds[1]!.envdVersion, "0.6.13");
      assert.ok(body.builds[1]!.finishedAt);
      assert.equal(body.builds[0]!.finishedAt, undefined);
      const token = res.headers.get("X-Next-Token");
      assert.ok(token);
      const rest = (await (await t.request(`/templates/${first.templateID}?nextToken=${token}`)).json()) as {
        builds: Array<{ buildID: string; cpuCount: number }>;
      };
      assert.deepEqual(
        rest.builds.map((b) => [b.buildID, b.cpuCount]),
        [[first.buildID, 1]],
      );
      await expectError(await t.request(`/templates/${first.templateID}`, { key: other.apiKey }), 404);
      await expectError(await t.request("/templates/nosuch"), 404);
    });

    test("publish and unpublish answer the names; only the owner can", async () => {
      const built = await buildTemplate(t, "pub");
      const patch = (json: unknown, key?: string) =>
        t.request(`/v2/templates/${built.templateID}`, { method: "PATCH", json, key });
      const res = await patch({ public: true });
      assert.equal(res.status, 200);
      assert.deepEqual(await res.json(), { names: ["default/pub"] });
      assert.equal(((await (await t.request("/templates/pub")).json()) as { public: boolean }).public, true);
      assert.equal((await patch({})).status, 200, "an empty body changes nothing");
      assert.equal((await patch({ public: false })).status, 200);
      await expectError(await patch({ public: true }, other.apiKey), 404);
      await expectError(await patch({ public: "yes" }), 400);
      await expectError(await patch({ name: "x" }), 400, /unknown field 'name'/);
    });

    test("tags: assign to the build a target names, list, delete; default is not given or taken", async () => {
      const v1 = await buildTemplate(t, "tagme:v1");
      const latest = await buildTemplate(t, "tagme");
      const assign = (json: unknown) => t.request("/templates/tags", { method: "POST", json });
      const res = await assign({ target: "tagme:v1", tags: ["Stable", "prod"] });
      assert.equal(res.status, 201);
      assert.deepEqual(await res.json(), { buildID: v1.buildID, tags: ["stable", "prod"] });
      const toLatest = await assign({ target: "tagme", tags: ["edge"] });
      assert.deepEqual(await toLatest.json(), { buildID: latest.buildID, tags: ["edge"] });

      const list = async () =>
        (
          (await (await t.request(`/templates/${v1.templateID}/tags`)).json()) as Array<
            Record<string, string>
          >
        ).map((x) => [x.tag, x.buildID]);
      assert.deepEqual(await list(), [
        ["default", latest.buildID],
        ["edge", latest.buildID],
        ["prod", v1.buildID],
        ["stable", v1.buildID],
        ["v1", v1.buildID],
      ]);
      const one = (
        (await (await t.request("/templates/tagme/tags")).json()) as Array<Record<string, string>>
      )[0]!;
      assert.match(one.createdAt!, /^\d{4}-\d\d-\d\dT/);

      const remove = (json: unknown) => t.request("/templates/tags", { method: "DELETE", json });
      assert.equal((await remove({ name: "tagme", tags: ["prod", "edge"] })).status, 204);
      assert.deepEqual(
        (await list()).map(([tag]) => tag),
        ["default", "stable", "v1"],
      );
      const sbx = await createSandbox(t, { templateID: "tagme:stable" });
      assert.equal(t.fake.sandboxes.get(sbx.sandboxID)!.config.buildId, v1.buildID);

      await expectError(
        await assign({ target: "tagme:nope", tags: ["x"] }),
        404,
        /no ready build tagged 'nope'/,
      );
      await expectError(await assign({ target: "nosuch", tags: ["x"] }), 404);
      await expectError(await assign({ target: "tagme", tags: [] }), 400, /at least one tag/);
      await expectError(await assign({ target: "tagme", tags: ["default"] }), 400, /default/);
      await expectError(await assign({ target: "tagme", tags: ["bad tag"] }), 400, /not a valid tag/);
      await expectError(await remove({ name: "tagme", tags: ["default"] }), 400, /default/);
      await expectError(await remove({ name: "tagme:v1", tags: ["x"] }), 400, /without a tag/);
      await expectError(await remove({ name: "nosuch", tags: ["x"] }), 404);
      await expectError(
        await t.request("/templates/tags", {
          method: "POST",
          json: { target: "tagme", tags: ["x"] },
          key: other.apiKey,
        }),
        404,
      );
      await expectError(await t.request(`/templates/${v1.templateID}/tags`, { key: other.apiKey }), 404);
    });

    test("delete: 204, then 404; refused while sandboxes use it; the node drops the ready builds", async () => {
      const first = await buildTemplate(t, "doomed");
      const second = await buildTemplate(t, "doomed");
      const sbx = await createSandbox(t, { templateID: "doomed" });
      await expectError(
        await t.request("/templates/doomed", { method: "DELETE" }),
        409,
        /used by 1 running or paused sandbox/,
      );
      assert.equal((await t.request(`/sandboxes/${sbx.sandboxID}`, { method: "DELETE" })).status, 204);
      await expectError(await t.request("/templates/doomed", { method: "DELETE", key: other.apiKey }), 404);

      assert.equal((await t.request(`/templates/${first.templateID}`, { method: "DELETE" })).status, 204);
      assert.deepEqual(
        [...t.fake.templates.deleted].filter((id) => id === first.buildID || id === second.buildID).sort(),
        [first.buildID, second.buildID].sort(),
      );
      await expectError(await t.request(`/templates/${first.templateID}`, { method: "DELETE" }), 404);
      await expectError(await t.request("/templates/aliases/doomed"), 404);
      const create = await t.request("/v2/sandboxes", { method: "POST", json: { templateID: "doomed" } });
      assert.equal(create.status, 404);
      const logs = await t.api.db
        .selectFrom("template_build_logs")
        .select("build_id")
        .where("build_id", "in", [first.buildID, second.buildID])
        .execute();
      assert.equal(logs.length, 0, "builds and logs went with it");
      const again = await requestBuild(t, { name: "doomed" });
      assert.notEqual(again.templateID, first.templateID, "the name is free again");
    });

    test("delete cancels a build running on the node", async () => {
      const hold = t.fake.templates.holdNext();
      const requested = await requestBuild(t, { name: "cancelled" });
      const start = await t.request(`/v2/templates/${requested.templateID}/builds/${requested.buildID}`, {
        method: "POST",
        json: { fromImage: "e2bdev/base" },
      });
      assert.equal(start.status, 202);
      assert.equal(await hold.reached, requested.buildID);
      assert.equal((await t.request(`/templates/${requested.templateID}`, { method: "DELETE" })).status, 204);
      assert.ok(t.fake.templates.cancelled.includes(requested.buildID), "the node's build was cancelled");
      hold.release();
    });
  });
}
