/**
 * The E2B CLI's template commands (the @e2b/cli devDependency, run as a child process) against the
 * API over real HTTP with the fake node: `template create` from a Dockerfile (the SDK's build flow
 * bundled in the CLI), `list --format json`, `publish`, `delete`.
 */
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { createNoopLogger } from "@moat/shared";
import { type RunningAPI, startAPI } from "../src/index.js";
import { FakeOrchestrator } from "./fakes/fake-orchestrator.js";

const E2B_CLI = fileURLToPath(new URL("../../../node_modules/@e2b/cli/dist/index.js", import.meta.url));
const run = promisify(execFile);

describe("the E2B CLI's template commands against the API (fake node)", () => {
  const fake = new FakeOrchestrator();
  let api: RunningAPI;
  let dataDir: string;
  let dir: string;
  let apiKey: string;
  // Asynchronous: the API answers from this process while the CLI runs.
  const cli = async (...args: string[]) =>
    (
      await run(process.execPath, [E2B_CLI, ...args], {
        cwd: dir,
        env: { ...process.env, HOME: dir, NO_COLOR: "1", E2B_API_KEY: apiKey, E2B_API_URL: api.url },
        encoding: "utf8",
        timeout: 60_000,
      })
    ).stdout;

  before(async () => {
    dataDir = await mkdtemp(path.join(tmpdir(), "moat-api-cli-"));
    dir = await mkdtemp(path.join(tmpdir(), "moat-cli-context-"));
    await writeFile(
      path.join(dir, "e2b.Dockerfile"),
      "FROM e2bdev/base\nRUN echo from-dockerfile > /home/user/df.txt\nCOPY hello.txt /home/user/hello.txt\nENV DF_VAR=yes\n",
    );
    await writeFile(path.join(dir, "hello.txt"), "hello from the context\n");
    api = await startAPI({
      dataDir,
      databaseURL: "memory://",
      port: 0,
      orchestrators: [{ id: "node-1", transport: fake.transport() }],
      logger: createNoopLogger(),
    });
    apiKey = (await api.bootstrap()).apiKey!;
  });
  after(async () => {
    await api.close();
    fake.close();
    await rm(dataDir, { recursive: true, force: true });
    await rm(dir, { recursive: true, force: true });
  });

  test("create from a Dockerfile, list, publish, delete", async () => {
    const out = await cli(
      "template",
      "create",
      "moat-cli",
      "--path",
      dir,
      "--memory-mb",
      "512",
      "--cpu-count",
      "1",
    );
    assert.match(out, /Building sandbox template moat-cli finished/);
    const sent = fake.templates.requests.at(-1)!;
    assert.equal(sent.fromImage, "e2bdev/base");
    assert.deepEqual(
      sent.steps.map((s) => s.type),
      ["USER", "WORKDIR", "RUN", "COPY", "ENV", "USER", "WORKDIR"],
    );
    assert.equal(sent.vcpu, 1);
    assert.equal(sent.memoryMb, 512);
    assert.ok(fake.templates.downloads.has(sent.steps[3]!.filesHash), "the node fetched the context files");

    const listed = JSON.parse(await cli("template", "list", "--format", "json")) as Array<
      Record<string, unknown>
    >;
    assert.equal(listed.length, 1);
    assert.deepEqual(listed[0]!.aliases, ["moat-cli"]);
    assert.equal(listed[0]!.buildStatus, "ready");
    assert.equal(listed[0]!.cpuCount, 1);

    assert.match(await cli("template", "publish", "moat-cli", "--yes"), /Published as: default\/moat-cli/);
    const published = JSON.parse(await cli("template", "list", "--format", "json")) as Array<{
      public: boolean;
    }>;
    assert.equal(published[0]!.public, true);

    await cli("template", "delete", "moat-cli", "--yes");
    assert.match(await cli("template", "list"), /No templates found/);
    assert.deepEqual(fake.templates.deleted, [sent.buildId], "the node dropped the build");
  });
});
