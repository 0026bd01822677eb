/**
 * Template builds over HTTP as the SDK drives them: request (POST /v3/templates), upload of COPY
 * files, start, and the status polls; what reaches the node (BuildTemplateRequest) and what the
 * status answers while and after the node streams its log.
 */
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { Code } from "@connectrpc/connect";
import { backends } from "./helpers.js";
import {
  buildTemplate,
  expectError,
  requestBuild,
  startBuild,
  startTemplateTestAPI,
  type TemplateTestAPI,
  uploadFiles,
  waitForBuild,
} from "./template-helpers.js";

for (const backend of backends) {
  describe(`template builds (${backend.name})`, () => {
    let t: TemplateTestAPI;
    before(async () => {
      t = await startTemplateTestAPI(backend);
    });
    after(() => t.close());

    test("request, upload, start, poll: the node gets the steps and the files; the build is ready", async () => {
      const requested = await requestBuild(t, { name: "app:v1", cpuCount: 4, memoryMB: 2048 });
      assert.match(requested.templateID, /^[a-z0-9]{20}$/);
      assert.match(requested.buildID, /^[0-9a-f-]{36}$/);
      assert.deepEqual(requested.names, ["default/app"]);
      assert.deepEqual(requested.aliases, ["app"]);
      assert.deepEqual(requested.tags, ["v1"]);
      assert.equal(requested.public, false);

      const waiting = await t.request(
        `/templates/${requested.templateID}/builds/${requested.buildID}/status`,
      );
      assert.equal(((await waiting.json()) as { status: string }).status, "waiting");

      const files = "a tar, as far as the API cares";
      const { hash, uploaded } = await uploadFiles(t, requested.templateID, files);
      assert.equal(uploaded, true);
      assert.deepEqual(await uploadFiles(t, requested.templateID, files), { hash, uploaded: false });

      const steps = [
        { type: "RUN", args: ["echo hi"], force: false },
        { type: "COPY", args: ["app.py", "/app/", "", ""], filesHash: hash, forceUpload: true, gzip: true },
        { type: "ENV", args: ["A", "1", "B", ""] },
        { type: "WORKDIR", args: ["/app"] },
        { type: "USER", args: ["user"], resolveSymlinks: false },
      ];
      const res = await startBuild(t, requested, {
        fromImage: "e2bdev/base",
        startCmd: "python -m http.server",
        readyCmd: "sleep 1",
        force: false,
        steps,
      });
      assert.equal(res.status, 202, await res.text());
      const info = await waitForBuild(t, requested);
      assert.equal(info.status, "ready");
      assert.deepEqual(info.logs, []);
      assert.equal(info.reason, undefined);
      assert.deepEqual(
        info.logEntries.map((e) => [e.step, e.level, e.message]),
        [
          ["base", "debug", "resolving e2bdev/base"],
          ["base", "info", "FROM e2bdev/base"],
          ["1", "info", "RUN echo hi"],
          ["2", "info", "COPY app.py /app/"],
          ["3", "info", "ENV A 1 B"],
          ["4", "info", "WORKDIR /app"],
          ["5", "info", "USER user"],
          ["finalize", "info", "snapshot taken"],
        ],
        "steps are numbered from 1, as the SDK's stack traces",
      );

      const sent = t.fake.templates.requests.at(-1)!;
      assert.equal(sent.templateId, requested.templateID);
      assert.equal(sent.buildId, requested.buildID);
      assert.equal(sent.vcpu, 4);
      assert.equal(sent.memoryMb, 2048);
      assert.equal(sent.fromImage, "e2bdev/base");
      assert.equal(sent.fromBuildId, "");
      assert.equal(sent.fromImageRegistry, undefined);
      assert.equal(sent.startCmd, "python -m http.server");
      assert.equal(sent.readyCmd, "sleep 1");
      assert.deepEqual(
        sent.steps.map((s) => [s.type, s.args, s.filesHash]),
        steps.map((s) => [s.type, s.args, s.filesHash ?? ""]),
      );
      assert.match(
        sent.steps[1]!.filesUrl,
        new RegExp(`/template-files/${t.teamID}/${hash}\\?expires=\\d+&signature=`),
      );
      assert.equal(sent.steps[0]!.filesUrl, "");
      assert.equal(t.fake.templates.downloads.get(hash)?.toString(), files, "the node downloaded the upload");

      const stored = await t.api.db
        .selectFrom("template_builds")
        .selectAll()
        .where("build_id", "=", requested.buildID)
        .executeTakeFirstOrThrow();
      assert.equal(stored.envd_version, "0.6.13");
      assert.equal(stored.default_user, "user");
      assert.equal(stored.default_workdir, "/app");
      assert.equal(stored.node_id, "node-1");
      assert.ok(stored.finished_at);
      assert.equal(stored.start_request?.steps.length, 5);
    });

    test("status pages: logsOffset skips entries, limit caps them, level filters them", async () => {
      const built = await buildTemplate(t, "paged", {
        fromImage: "e2bdev/base",
        steps: [
          { type: "RUN", args: ["a"] },
          { type: "RUN", args: ["b"] },
        ],
      });
      const path = `/templates/${built.templateID}/builds/${built.buildID}/status`;
      const messages = async (query: string) => {
        const res = await t.request(`${path}?${query}`);
        assert.equal(res.status, 200);
        return ((await res.json()) as { logEntries: Array<{ message: string }> }).logEntries.map(
          (e) => e.message,
        );
      };
      assert.deepEqual(await messages("logsOffset=3"), ["RUN b", "snapshot taken"]);
      assert.deepEqual(await messages("logsOffset=1&limit=2"), ["FROM e2bdev/base", "RUN a"]);
      assert.deepEqual(await messages("level=info&logsOffset=1"), ["RUN a", "RUN b", "snapshot taken"]);
      assert.deepEqual(await messages("logsOffset=99"), []);
      assert.equal((await t.request(`${path}?level=loud`)).status, 400);
      assert.equal((await t.request(`${path}?logsOffset=-1`)).status, 400);
    });

    test("log pages by time: forward and backward, continued by nextCursor, filtered by level", async () => {
      const built = await buildTemplate(t, "logged", {
        fromImage: "e2bdev/base",
        steps: [
          { type: "RUN", args: ["a"] },
          { type: "RUN", args: ["b"] },
        ],
      });
      const base = `/templates/${built.templateID}/builds/${built.buildID}`;
      type Page = {
        logs: Array<{ id: string; message: string; timestamp: string; level: string }>;
        nextCursor?: string;
        source: string;
      };
      const page = async (query: string): Promise<Page> => {
        const res = await t.request(`${base}/logs?${query}`);
        assert.equal(res.status, 200, await res.clone().text());
        return (await res.json()) as Page;
      };
      const all = (await (await t.request(`${base}/status`)).json()) as {
        logEntries: Array<{ message: string }>;
      };
      const messages = all.logEntries.map((e) => e.message);
      assert.ok(messages.length >= 4);

      const whole = await page("");
      assert.deepEqual(
        whole.logs.map((e) => e.message),
        messages,
      );
      assert.equal(whole.nextCursor, undefined, "one page holds it all");
      assert.equal(whole.source, "persistent");
      assert.equal(new Set(whole.logs.map((e) => e.id)).size, messages.length, "ids are unique");

      // Two at a time, forward and backward, until no nextCursor.
      for (const direction of ["forward", "backward"] as const) {
        const seen: string[] = [];
        let cursor: string | undefined;
        do {
          const p = await page(`limit=2&direction=${direction}${cursor ? `&pageCursor=${cursor}` : ""}`);
          assert.ok(p.logs.length <= 2);
          seen.push(...p.logs.map((e) => e.message));
          cursor = p.nextCursor;
        } while (cursor);
        assert.deepEqual(seen, direction === "forward" ? messages : [...messages].reverse());
      }

      // A page cursor this API did not make is a clear 400, never a crash or another page.
      for (const forged of ["not-a-cursor", Buffer.from("log:-1").toString("base64url"), "%00"]) {
        const res = await t.request(`${base}/logs?pageCursor=${forged}`);
        assert.equal(res.status, 400, forged);
        assert.match(((await res.json()) as { message: string }).message, /pageCursor|NUL/);
      }

      // cursor is a time: entries from it (forward) or up to it (backward).
      const times = whole.logs.map((e) => Date.parse(e.timestamp));
      const last = times.at(-1)!;
      assert.deepEqual(
        (await page(`cursor=${last}`)).logs.map((e) => e.message),
        messages.filter((_, i) => times[i]! >= last),
      );
      assert.deepEqual((await page(`cursor=${last + 60_000}`)).logs, []);
      assert.deepEqual(
        (await page(`cursor=${times[0]! - 1}&direction=backward`)).logs,
        [],
        "nothing before the first entry",
      );
      assert.deepEqual(
        (await page("level=info")).logs.map((e) => e.level).filter((l) => l === "debug"),
        [],
      );

      for (const bad of [
        "pageCursor=bm9wZQ",
        "limit=101",
        "direction=sideways",
        "cursor=-5",
        "source=memory",
      ]) {
        await expectError(await t.request(`${base}/logs?${bad}`), 400);
      }
      await expectError(
        await t.request(`/templates/${built.templateID}/builds/${crypto.randomUUID()}/logs`),
        404,
      );
    });

    test("a failing step ends the build in error with the step's message and number", async () => {
      t.fake.templates.failNext(1, "command exited with code 2");
      const built = await buildTemplate(t, "broken", {
        fromImage: "e2bdev/base",
        steps: [
          { type: "RUN", args: ["true"] },
          { type: "RUN", args: ["false"] },
        ],
      });
      assert.equal(built.info.status, "error");
      assert.equal(built.info.reason?.message, "command exited with code 2");
      assert.equal(built.info.reason?.step, "2");
      assert.deepEqual(
        ((built.info.reason?.logEntries ?? []) as Array<{ message: string }>).map((e) => e.message),
        ["command exited with code 2"],
      );
      assert.equal(built.info.logEntries.at(-1)?.level, "error");
    });

    test("a rebuild under the same name reuses the template; waiting builds are superseded", async () => {
      const first = await buildTemplate(t, "reused");
      const abandoned = await requestBuild(t, { name: "reused" });
      const second = await requestBuild(t, { name: "default/reused", cpuCount: 1 });
      assert.equal(abandoned.templateID, first.templateID);
      assert.equal(second.templateID, first.templateID);
      assert.notEqual(second.buildID, first.buildID);
      await expectError(
        await startBuild(t, abandoned, { fromImage: "e2bdev/base" }),
        409,
        /can no longer be started: superseded/,
      );
      assert.equal((await startBuild(t, second, { fromImage: "e2bdev/base" })).status, 202);
      await waitForBuild(t, second);
      await expectError(await startBuild(t, second, { fromImage: "e2bdev/base" }), 409, /already started/);
      const got = (await (await t.request(`/templates/${first.templateID}`)).json()) as {
        builds: Array<{ buildID: string; status: string; cpuCount: number }>;
      };
      assert.deepEqual(
        got.builds.map((b) => [b.buildID, b.status]),
        [
          [second.buildID, "ready"],
          [abandoned.buildID, "error"],
          [first.buildID, "ready"],
        ],
      );
    });

    test("fromTemplate resolves to a build; base to the base template; the node is pinned", async () => {
      const parent = await buildTemplate(t, "parent");
      const fromParent = await requestBuild(t, { name: "child" });
      assert.equal((await startBuild(t, fromParent, { fromTemplate: "parent" })).status, 202);
      assert.equal((await waitForBuild(t, fromParent)).status, "ready");
      assert.equal(t.fake.templates.requests.at(-1)?.fromBuildId, parent.buildID);
      assert.equal(t.fake.templates.requests.at(-1)?.fromImage, "");

      const fromBase = await requestBuild(t, { name: "child" });
      assert.equal((await startBuild(t, fromBase, { fromTemplate: "base" })).status, 202);
      await waitForBuild(t, fromBase);
      assert.equal(t.fake.templates.requests.at(-1)?.fromBuildId, "base");

      const fromID = await requestBuild(t, { name: "child" });
      assert.equal((await startBuild(t, fromID, { fromTemplate: parent.templateID })).status, 202);
      await waitForBuild(t, fromID);
      assert.equal(t.fake.templates.requests.at(-1)?.fromBuildId, parent.buildID);

      const unknown = await requestBuild(t, { name: "child" });
      await expectError(await startBuild(t, unknown, { fromTemplate: "nosuch" }), 404, /nosuch/);
      await expectError(await startBuild(t, unknown, { fromTemplate: "parent:nosuchtag" }), 404, /nosuchtag/);
    });

    test("registry credentials reach the node and are not stored; aws and gcp are refused", async () => {
      const requested = await requestBuild(t, { name: "private-image" });
      await expectError(
        await startBuild(t, requested, {
          fromImage: "123.dkr.ecr.eu-west-1.amazonaws.com/app",
          fromImageRegistry: { type: "aws", awsAccessKeyId: "a", awsSecretAccessKey: "b", awsRegion: "c" },
        }),
        400,
        /type 'aws' is not supported/,
      );
      await expectError(
        await startBuild(t, requested, {
          fromImage: "gcr.io/p/app",
          fromImageRegistry: { type: "gcp", serviceAccountJson: "{}" },
        }),
        400,
        /type 'gcp' is not supported/,
      );
      const res = await startBuild(t, requested, {
        fromImage: "registry.example/app:1",
        fromImageRegistry: { type: "registry", username: "me", password: "s3cret" },
      });
      assert.equal(res.status, 202);
      await waitForBuild(t, requested);
      assert.deepEqual(
        { ...t.fake.templates.requests.at(-1)?.fromImageRegistry },
        { $typeName: "orchestrator.RegistryAuth", username: "me", password: "s3cret" },
      );
      const stored = await t.api.db
        .selectFrom("template_builds")
        .select("start_request")
        .where("build_id", "=", requested.buildID)
        .executeTakeFirstOrThrow();
      assert.deepEqual(stored.start_request?.fromImageRegistry, { type: "registry", username: "me" });
      assert.doesNotMatch(JSON.stringify(stored), /s3cret/);
    });

    test("start requests are checked before anything reaches the node", async () => {
      const requested = await requestBuild(t, { name: "checked" });
      const before = t.fake.templates.requests.length;
      const start = (body: Record<string, unknown>) => startBuild(t, requested, body);
      await expectError(await start({}), 400, /exactly one of fromImage and fromTemplate/);
      await expectError(await start({ fromImage: "a", fromTemplate: "base" }), 400, /exactly one/);
      await expectError(await start({ fromImage: "a", bogus: 1 }), 400, /unknown field 'bogus'/);
      await expectError(
        await start({ fromImage: "a", steps: [{ type: "ADD", args: [] }] }),
        400,
        /steps\.0\.type/,
      );
      await expectError(
        await start({
          fromImage: "a",
          steps: [
            { type: "RUN", args: ["ok"] },
            { type: "COPY", args: ["a", "/b"] },
          ],
        }),
        400,
        /steps\[1\] \(COPY a \/b\): filesHash/,
      );
      const missing = "0".repeat(64);
      await expectError(
        await start({ fromImage: "a", steps: [{ type: "COPY", args: ["a", "/b"], filesHash: missing }] }),
        400,
        new RegExp(`steps\\[0\\] \\(COPY a /b\\): the files with hash ${missing} were not uploaded`),
      );
      await expectError(
        await start({ fromImage: "a", steps: [{ type: "ENV", args: ["A"] }] }),
        400,
        /ENV needs/,
      );
      await expectError(
        await start({ fromImage: "a", steps: [{ type: "RUN", args: [] }] }),
        400,
        /RUN needs/,
      );
      await expectError(
        await start({ fromImage: "a", fromImageRegistry: { type: "registry", username: "u" } }),
        400,
        /fromImageRegistry/,
      );
      assert.equal(t.fake.templates.requests.length, before, "nothing reached the node");
      assert.equal((await start({ fromImage: "a" })).status, 202, "the build can still start");
      await waitForBuild(t, requested);
    });

    test("unknown templates and builds are 404; malformed build ids 400", async () => {
      const requested = await requestBuild(t, { name: "known" });
      const uuid = "00000000-0000-4000-8000-000000000000";
      await expectError(await t.request(`/templates/nosuch/builds/${uuid}/status`), 404, /template 'nosuch'/);
      await expectError(
        await t.request(`/templates/${requested.templateID}/builds/${uuid}/status`),
        404,
        /build/,
      );
      await expectError(
        await t.request(`/templates/${requested.templateID}/builds/nope/status`),
        400,
        /buildID/,
      );
      await expectError(await startBuild(t, { ...requested, buildID: uuid }, { fromImage: "a" }), 404);
      await expectError(await t.request(`/templates/nosuch/files/${"a".repeat(64)}`), 404);
      await expectError(await t.request(`/templates/${requested.templateID}/files/xyz`), 400, /hash/);
    });

    test("build requests: names, tags and resources are checked; base is reserved", async () => {
      const post = (json: unknown) => t.request("/v3/templates", { method: "POST", json });
      await expectError(await post({}), 400, /name is required/);
      await expectError(await post({ name: "base" }), 400, /reserved/);
      await expectError(await post({ name: "Has Space" }), 400, /not a valid template name/);
      await expectError(await post({ name: "ok", tags: ["bad tag"] }), 400, /not a valid tag/);
      await expectError(await post({ name: "ok:00000000-0000-4000-8000-000000000000" }), 400, /UUID/);
      await expectError(await post({ name: "someone-else/ok" }), 400, /namespace 'someone-else'/);
      await expectError(await post({ name: "ok", cpuCount: 0 }), 400, /cpuCount/);
      await expectError(await post({ name: "ok", cpuCount: 64 }), 400, /cpuCount/);
      await expectError(await post({ name: "ok", memoryMB: 64 }), 400, /memoryMB/);
      await expectError(await post({ name: "ok", memoryMB: 1025 }), 400, /even/);
      await expectError(await post({ name: "ok", teamID: "another" }), 400, /teamID/);

      const defaults = await requestBuild(t, { alias: "Legacy-Alias", tags: ["b", "a", "b"] });
      assert.deepEqual(defaults.aliases, ["legacy-alias"]);
      assert.deepEqual(defaults.tags, ["b", "a"]);
      const stored = await t.api.db
        .selectFrom("template_builds")
        .select(["cpu_count", "memory_mb"])
        .where("build_id", "=", defaults.buildID)
        .executeTakeFirstOrThrow();
      assert.deepEqual(stored, { cpu_count: 2, memory_mb: 1024 }, "infra's defaults");
      assert.deepEqual((await requestBuild(t, { name: "plain:default" })).tags, ["default"]);
    });

    test("a node that fails the Build call fails the build, with its message", async () => {
      t.fake.templates.failNextCall(Code.Internal, "disk full");
      const failed = await buildTemplate(t, "unlucky");
      assert.equal(failed.info.status, "error");
      assert.match(failed.info.reason?.message ?? "", /the build failed on node 'node-1': .*disk full/);
    });
  });
}
