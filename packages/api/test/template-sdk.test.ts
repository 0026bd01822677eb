/**
 * The official e2b SDK's Template API against the API over real HTTP, with the fake node behind it:
 * Template.build (request, the tar upload to the signed URL, start, status polling), BuildError
 * for a failed step, Template.exists, tags, and a sandbox from the built template.
 */
import assert from "node:assert/strict";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import { gunzipSync } from "node:zlib";
import { createLogger, createNoopLogger } from "@moat/shared";
import { BuildError, Sandbox, Template } from "e2b";
import { type RunningAPI, startAPI } from "../src/index.js";
import { FakeOrchestrator } from "./fakes/fake-orchestrator.js";

describe("the e2b SDK's Template API against the API (fake node)", () => {
  const fake = new FakeOrchestrator();
  let api: RunningAPI;
  let dataDir: string;
  let context: string;
  let opts: { apiKey: string; apiUrl: string };

  before(async () => {
    dataDir = await mkdtemp(path.join(tmpdir(), "moat-api-sdk-templates-"));
    context = await mkdtemp(path.join(tmpdir(), "moat-template-context-"));
    await writeFile(path.join(context, "hello.txt"), "hello from the SDK\n");
    api = await startAPI({
      dataDir,
      databaseURL: "memory://",
      port: 0,
      orchestrators: [{ id: "node-1", transport: fake.transport() }],
      logger: process.env.DEBUG_API ? createLogger("api", "debug") : createNoopLogger(),
    });
    const { apiKey } = await api.bootstrap();
    opts = { apiKey: apiKey!, apiUrl: api.url };
  });
  after(async () => {
    await api.close();
    fake.close();
    await rm(dataDir, { recursive: true, force: true });
    await rm(context, { recursive: true, force: true });
  });

  const template = () =>
    Template({ fileContextPath: context }).fromBaseImage().runCmd("echo hi").copy("hello.txt", "/app/");

  test("Template.build uploads the files, starts the build and follows it to ready", async () => {
    assert.equal(api.publicURL, api.url);
    const logs: string[] = [];
    const info = await Template.build(template(), "sdk-app:v1", {
      ...opts,
      cpuCount: 1,
      memoryMB: 1024,
      onBuildLogs: (entry) => logs.push(entry.message),
    });
    assert.match(info.templateId, /^[a-z0-9]{20}$/);
    assert.deepEqual(info.tags, ["v1"]);

    const sent = fake.templates.requests.at(-1)!;
    assert.equal(sent.buildId, info.buildId);
    assert.equal(sent.fromImage, "e2bdev/base");
    assert.equal(sent.vcpu, 1);
    assert.deepEqual(
      sent.steps.map((s) => [s.type, s.args]),
      [
        ["RUN", ["echo hi"]],
        ["COPY", ["hello.txt", "/app/", "", ""]],
      ],
    );
    const copy = sent.steps[1]!;
    assert.ok(copy.filesUrl.startsWith(`${api.url}/template-files/`), copy.filesUrl);
    const tar = gunzipSync(fake.templates.downloads.get(copy.filesHash)!);
    assert.ok(tar.includes("hello from the SDK"), "the node fetched the SDK's gzipped tar over HTTP");

    for (const message of ["Uploaded 'hello.txt'", "FROM e2bdev/base", "RUN echo hi", "snapshot taken"]) {
      assert.ok(logs.includes(message), `${message} in ${JSON.stringify(logs)}`);
    }
    const status = await Template.getBuildStatus(info, opts);
    assert.equal(status.status, "ready");
  });

  test("a rebuild reuses the template and skips the upload; exists and tags", async () => {
    const logs: string[] = [];
    const first = await Template.getBuildStatus(
      await Template.build(template(), "sdk-app", { ...opts, onBuildLogs: (e) => logs.push(e.message) }),
      opts,
    );
    assert.equal(first.status, "ready");
    assert.ok(logs.includes("Skipping upload of 'hello.txt', already cached"), JSON.stringify(logs));
    const listed = (await (
      await fetch(`${api.url}/templates`, { headers: { "X-API-Key": opts.apiKey } })
    ).json()) as Array<{
      templateID: string;
      buildCount: number;
    }>;
    assert.equal(listed.length, 1, "one template, rebuilt");
    assert.equal(listed[0]!.templateID, first.templateID);
    assert.equal(listed[0]!.buildCount, 2);

    assert.equal(await Template.exists("sdk-app", opts), true);
    assert.equal(await Template.exists("default/sdk-app", opts), true);
    assert.equal(await Template.exists("no-such-app", opts), false);

    const assigned = await Template.assignTags("sdk-app:v1", ["prod", "stable"], opts);
    assert.deepEqual(assigned.tags, ["prod", "stable"]);
    const tags = await Template.getTags("sdk-app", opts);
    assert.deepEqual(
      tags.map((x) => x.tag),
      ["default", "prod", "stable", "v1"],
    );
    assert.equal(tags.find((x) => x.tag === "prod")?.buildId, assigned.buildId);
    assert.ok(tags[0]!.createdAt instanceof Date);
    await Template.removeTags("sdk-app", "stable", opts);
    assert.deepEqual(
      (await Template.getTags("sdk-app", opts)).map((x) => x.tag),
      ["default", "prod", "v1"],
    );
  });

  test("a failing step is a BuildError with the node's message", async () => {
    fake.templates.failNext(0, "echo: command failed with exit code 1");
    await assert.rejects(
      Template.build(template(), "sdk-broken", opts),
      (err: Error) =>
        err instanceof BuildError && err.message.includes("echo: command failed with exit code 1"),
    );
  });

  test("a sandbox from the template starts its build with the template's resources", async () => {
    const sbx = await Sandbox.create("sdk-app:prod", opts);
    const config = fake.sandboxes.get(sbx.sandboxId)!.config;
    const tags = await Template.getTags("sdk-app", opts);
    assert.equal(config.buildId, tags.find((x) => x.tag === "prod")?.buildId);
    const info = await sbx.getInfo();
    assert.equal(info.name, "sdk-app");
    assert.equal(info.cpuCount, 1);
    assert.equal(info.memoryMB, 1024);
    await sbx.kill();
  });
});
