/**
 * Templates on any node through shared artifacts, with one orchestrator (one node per host until
 * the fleet's per-node names land): a build made by the node is published; the node is stopped and
 * started again on a fresh data directory (nothing of the build left locally) with the same shared
 * storage; a create of the build fetches its layers and its published snapshot and restores from
 * it, not a cold boot. Once with a directory, once with S3 (s3rver, in this process, on loopback).
 */
import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { mkdtemp, readdir, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { createClient } from "@connectrpc/connect";
import { DirectoryArtifactStore, S3ArtifactStore } from "@moat/orchestrator";
import type { BuildResult } from "@moat/shared/gen/orchestrator";
import { TemplateService } from "@moat/shared/gen/orchestrator";
// @ts-expect-error s3rver ships no types
import S3rver from "s3rver";
import { assertNoSandboxOutlives, type ForeignResources, foreignResources } from "../helpers/host-state.js";
import {
  createSandbox,
  makeDataDir,
  newSandboxID,
  nodeTransport,
  type RunningOrchestrator,
  removeDataDir,
  sdkFor,
  startOrchestrator,
} from "../helpers/orchestrator.js";

const BUCKET = "moat-artifacts-test";

interface Backend {
  name: string;
  env: Record<string, string>;
  /** The same storage as the node sees it, for the test's own checks. */
  store: DirectoryArtifactStore | S3ArtifactStore;
}

async function build(orch: RunningOrchestrator, buildId: string): Promise<BuildResult> {
  const templates = createClient(TemplateService, nodeTransport(orch.port, orch.token));
  let result: BuildResult | undefined;
  for await (const event of templates.build({
    teamId: "team-1",
    templateId: "shared-tpl",
    buildId,
    vcpu: 1,
    memoryMb: 512,
    fromBuildId: "base",
    steps: [{ type: "RUN", args: [`echo made-on-the-first-node > /home/user/${buildId}.txt`] }],
  })) {
    if (event.event.case === "result") result = event.event.value;
  }
  assert.ok(result, "the build stream ends with a result");
  return result;
}

describe("templates through shared artifacts", { timeout: 600_000 }, () => {
  let work: string;
  let s3: { close: () => Promise<void> } | undefined;
  let foreign: ForeignResources;
  const backends: Backend[] = [];
  const running: RunningOrchestrator[] = [];
  const dataDirs: string[] = [];

  before(async () => {
    foreign = await foreignResources();
    work = await mkdtemp(path.join(tmpdir(), "moat-test-artifacts-"));
    const dir = path.join(work, "shared");
    await import("node:fs/promises").then((fs) => fs.mkdir(dir));
    backends.push({
      name: "directory",
      env: { MOAT_ARTIFACTS: dir },
      store: new DirectoryArtifactStore(dir),
    });
    const server = new S3rver({
      address: "127.0.0.1",
      port: 0,
      silent: true,
      directory: path.join(work, "s3rver"),
      configureBuckets: [{ name: BUCKET }],
    });
    const { port } = (await server.run()) as { port: number };
    s3 = server;
    const endpoint = `http://127.0.0.1:${port}`;
    const credentials = { accessKeyId: "S3RVER", secretAccessKey: "S3RVER" };
    backends.push({
      name: "s3 (s3rver)",
      env: {
        MOAT_ARTIFACTS: `s3://${BUCKET}/fleet`,
        AWS_ENDPOINT_URL_S3: endpoint,
        AWS_REGION: "us-east-1",
        AWS_ACCESS_KEY_ID: credentials.accessKeyId,
        AWS_SECRET_ACCESS_KEY: credentials.secretAccessKey,
      },
      store: new S3ArtifactStore({
        bucket: BUCKET,
        prefix: "fleet",
        forcePathStyle: true,
        client: { endpoint, region: "us-east-1", credentials },
      }),
    });
  });

  after(async () => {
    const errors: unknown[] = [];
    for (const orch of running) {
      try {
        if (orch.child.exitCode === null && orch.child.signalCode === null) {
          for (const s of (await orch.client.list({})).sandboxes) {
            await orch.client.delete({ sandboxId: s.config!.sandboxId }).catch(() => undefined);
          }
          await orch.stop();
        }
        await assertNoSandboxOutlives(orch.dataDir, foreign);
      } catch (err) {
        errors.push(err);
      }
    }
    for (const dir of dataDirs) await removeDataDir(dir);
    for (const b of backends) if (b.store instanceof S3ArtifactStore) b.store.close();
    await s3?.close();
    await rm(work, { recursive: true, force: true });
    if (errors.length > 0) throw errors[0];
  });

  async function start(env: Record<string, string>): Promise<RunningOrchestrator> {
    const dataDir = await makeDataDir();
    dataDirs.push(dataDir);
    const orch = await startOrchestrator(dataDir, { env });
    running.push(orch);
    return orch;
  }

  for (const index of [0, 1]) {
    test(`a build made on one data directory starts from its published snapshot on a fresh one: ${["directory", "s3 (s3rver)"][index]}`, async () => {
      const backend = backends[index]!;
      const buildID = `shared-b${index}`;
      const first = await start(backend.env);
      const result = await build(first, buildID);
      assert.equal(result.ok, true, result.message);
      const published = await backend.store.list(`templates/builds/${buildID}/`);
      assert.ok(published.includes(`templates/builds/${buildID}/build.json`), published.join(", "));
      assert.ok(
        published.some((k) => /\/snapshots\/[0-9a-f]{16}\.tar\.zst$/.test(k)),
        `its snapshot is published: ${published.join(", ")}`,
      );
      await first.stop();

      // Another node as far as the build goes: the same runtime, nothing of the build.
      const second = await start(backend.env);
      assert.equal(existsSync(path.join(second.dataDir, "templates", "builds", buildID)), false);
      const started = performance.now();
      const info = await createSandbox(second, { templateID: "shared-tpl", buildID, memoryMB: 512 });
      const ms = Math.round(performance.now() - started);
      assert.equal(info.startKind, "snapshot", "restored from the fetched snapshot, not booted cold");
      const out = await sdkFor(info).commands.run(`cat /home/user/${buildID}.txt`);
      assert.equal(out.stdout.trim(), "made-on-the-first-node");
      assert.match(second.log(), /template build fetched from shared storage/);
      process.stderr.write(`# ${backend.name}: first create on a node without the build: ${ms} ms\n`);
      await second.client.delete({ sandboxId: info.config!.sandboxId });

      // A node of a runtime without a published snapshot (another runsc): cold, then its own is
      // made and published.
      if (index === 0) {
        for (const key of published.filter((k) => k.includes("/snapshots/"))) await backend.store.delete(key);
        await second.stop();
        const third = await start(backend.env);
        const cold = await createSandbox(third, { templateID: "shared-tpl", buildID, memoryMB: 512 });
        assert.equal(cold.startKind, "cold");
        await third.client.delete({ sandboxId: cold.config!.sandboxId });
        const deadline = Date.now() + 60_000;
        while (
          !(await backend.store.list(`templates/builds/${buildID}/`)).some((k) => k.includes("/snapshots/"))
        ) {
          assert.ok(Date.now() < deadline, "the node re-made and published the snapshot");
          await new Promise((r) => setTimeout(r, 500));
        }
        await third.stop();
      } else {
        await second.stop();
      }
      assert.deepEqual(await readdir(path.join(second.dataDir, "artifacts", "tmp")), []);
    });
  }

  test("a named snapshot taken on one data directory starts on a fresh one, and its delete reaches shared storage", async () => {
    const backend = backends[0]!;
    const snapshotId = "shared-snap-1";
    const first = await start(backend.env);
    const source = await createSandbox(first, { memoryMB: 512 });
    await sdkFor(source).commands.run("echo kept-in-the-snapshot > /home/user/snap.txt");
    await first.client.snapshot({ sandboxId: source.config!.sandboxId, snapshotId });
    await first.client.delete({ sandboxId: source.config!.sandboxId });
    assert.equal(await backend.store.has(`snapshots/${snapshotId}.tar.zst`), true);
    await first.stop();

    const second = await start(backend.env);
    const res = await second.client.create({
      sandbox: {
        sandboxId: newSandboxID(),
        templateId: "base",
        vcpu: 1,
        memoryMb: 512,
        snapshotId,
        allowInternetAccess: true,
      },
      endTime: timestampFromDate(new Date(Date.now() + 300_000)),
    });
    const info = res.sandbox!;
    assert.equal(info.startKind, "snapshot");
    const out = await sdkFor(info).commands.run("cat /home/user/snap.txt");
    assert.equal(out.stdout.trim(), "kept-in-the-snapshot");
    assert.match(second.log(), /snapshot fetched from shared storage/);
    await second.client.delete({ sandboxId: info.config!.sandboxId });
    await second.client.deleteSnapshot({ snapshotId });
    assert.equal(await backend.store.has(`snapshots/${snapshotId}.tar.zst`), false);
    await second.stop();
  });
});
