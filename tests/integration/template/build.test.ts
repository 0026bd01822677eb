/**
 * Template builds on a real orchestrator (orchestrator.TemplateService): steps run in gVisor build
 * sandboxes through envd, each RUN/COPY a cached layer; the build ends in a snapshot with the start
 * command running, and sandboxes from the build start from it with its user, workdir and env.
 */
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { once } from "node:events";
import { lstat, mkdir, mkdtemp, readdir, readFile, rm, writeFile } from "node:fs/promises";
import http from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import path from "node:path";
import { before, describe, test } from "node:test";
import { createClient } from "@connectrpc/connect";
import type { BuildResult, TemplateStep } from "@moat/shared/gen/orchestrator";
import { TemplateService } from "@moat/shared/gen/orchestrator";
import * as tar from "tar";
import {
  createSandbox,
  hostResources,
  nodeTransport,
  sdkFor,
  settledHostResources,
} from "../helpers/orchestrator.js";
import { withOrchestrator } from "../helpers/with-orchestrator.js";

type StepInit = Partial<TemplateStep> & { type: string; args: string[] };

describe("template builds on the orchestrator", { timeout: 600_000 }, () => {
  let templates: ReturnType<typeof createClient<typeof TemplateService>>;
  let files: http.Server;
  let filesBase: string;
  let work: string;
  let before0: Awaited<ReturnType<typeof hostResources>>;
  const orch = withOrchestrator({
    beforeTeardown: () => {
      files?.close();
    },
    afterTeardown: async () => {
      if (work) await rm(work, { recursive: true, force: true });
    },
  });

  before(async () => {
    work = await mkdtemp(path.join(tmpdir(), "moat-test-ctx-"));
    before0 = await hostResources(orch);
    templates = createClient(TemplateService, nodeTransport(orch.port, orch.token));
    // What the API does for COPY steps: serves each uploaded tar at a URL.
    files = http.createServer((req, res) => {
      const name = path.basename(req.url ?? "");
      res.setHeader("content-type", "application/octet-stream");
      import("node:fs").then(({ createReadStream }) =>
        createReadStream(path.join(work, `${name}.tar.gz`))
          .on("error", () => {
            res.statusCode = 404;
            res.end();
          })
          .pipe(res),
      );
    });
    files.listen(0, "127.0.0.1");
    await once(files, "listening");
    filesBase = `http://127.0.0.1:${(files.address() as AddressInfo).port}`;
  });

  /**
   * A context dir with `entries`, tarred (gzip, as the SDK uploads) under `name`; answers where it
   * is served and its SHA-256 (what the API hands the node as the files hash).
   */
  async function upload(
    name: string,
    entries: Record<string, string>,
  ): Promise<{ url: string; hash: string }> {
    const dir = path.join(work, `ctx-${name}`);
    for (const [file, content] of Object.entries(entries)) {
      await mkdir(path.dirname(path.join(dir, file)), { recursive: true });
      await writeFile(path.join(dir, file), content);
    }
    const archive = path.join(work, `${name}.tar.gz`);
    await tar.c({ gzip: true, cwd: dir, file: archive }, Object.keys(entries));
    const hash = createHash("sha256")
      .update(await readFile(archive))
      .digest("hex");
    return { url: `${filesBase}/${name}`, hash };
  }

  async function build(
    buildId: string,
    steps: StepInit[],
    extra: { startCmd?: string; readyCmd?: string; fromBuildId?: string; fromImage?: string } = {},
  ): Promise<{ result: BuildResult; logs: Array<{ message: string; step: string }> }> {
    const logs: Array<{ message: string; step: string }> = [];
    let result: BuildResult | undefined;
    for await (const event of templates.build({
      teamId: "team-1",
      templateId: "tpl1",
      buildId,
      vcpu: 2,
      memoryMb: 512,
      fromBuildId: extra.fromImage ? "" : (extra.fromBuildId ?? "base"),
      fromImage: extra.fromImage ?? "",
      startCmd: extra.startCmd ?? "",
      readyCmd: extra.readyCmd ?? "",
      steps,
    })) {
      if (event.event.case === "log") logs.push(event.event.value);
      if (event.event.case === "result") result = event.event.value;
    }
    assert.ok(result, "the stream ends with a result");
    return { result, logs };
  }

  test("a build runs its steps, caches layers and starts sandboxes from its snapshot", async () => {
    const files = await upload("h1", { "app/server.py": "print('hi')\n", "app/data/x.txt": "x\n" });
    const steps: StepInit[] = [
      { type: "RUN", args: ["echo built-by-$(whoami) > /home/user/who.txt"] },
      { type: "COPY", args: ["app", "/srv/app/", "user", ""], filesHash: files.hash, filesUrl: files.url },
      { type: "ENV", args: ["GREETING", "hello", "PATH", "/opt/tools:$PATH"] },
      { type: "WORKDIR", args: ["/srv/app"] },
      { type: "RUN", args: ["echo $GREETING > greeting.txt && id -un", "root"] },
      { type: "USER", args: ["user"] },
    ];
    const startCmd = "cd /srv/app && python3 -m http.server 8000";
    const readyCmd = '[ -n "$(ss -Htuln sport = :8000)" ]';
    const first = await build("b1", steps, { startCmd, readyCmd });
    assert.equal(first.result.ok, true, first.result.message);
    assert.equal(first.result.defaultUser, "user");
    assert.equal(first.result.defaultWorkdir, "/srv/app");
    const messages = first.logs.map((l) => l.message);
    assert.ok(messages.includes("root"), "RUN output streams as log entries");
    assert.ok(!messages.some((m) => m.startsWith("CACHED")), "nothing cached on the first build");

    const info = await createSandbox(orch, { templateID: "tpl1", buildID: "b1", memoryMB: 512, vcpu: 2 });
    assert.equal(info.startKind, "snapshot");
    const sbx = sdkFor(info);
    const r = await sbx.commands.run(
      "cat /home/user/who.txt greeting.txt; pwd; whoami; echo $GREETING; stat -c %U /srv/app/server.py; ls /srv/app/data; curl -s -o /dev/null -w '%{http_code}' localhost:8000/server.py",
    );
    assert.equal(
      r.stdout,
      "built-by-user\nhello\n/srv/app\nuser\nhello\nuser\nx.txt\n200",
      "files, workdir, user and env come from the build; the start command serves",
    );
    await orch.client.delete({ sandboxId: info.config!.sandboxId });

    // The same steps again: every layer from the cache. A changed last RUN reruns only it.
    const second = await build("b2", steps, { startCmd, readyCmd });
    assert.equal(second.result.ok, true, second.result.message);
    assert.deepEqual(
      second.logs.filter((l) => l.message.startsWith("CACHED")).map((l) => l.step),
      ["1", "2", "5", "finalize"],
      "every layer and the snapshot of the build that ended alike",
    );
    const twin = await createSandbox(orch, { templateID: "tpl1", buildID: "b2", memoryMB: 512, vcpu: 2 });
    assert.equal(twin.startKind, "snapshot");
    const served = await sdkFor(twin).commands.run("curl -s -o /dev/null -w '%{http_code}' localhost:8000/");
    assert.equal(served.stdout, "200", "the shared snapshot has the start command running");
    await orch.client.delete({ sandboxId: twin.config!.sandboxId });
    const changed = [...steps.slice(0, 4), { type: "RUN", args: ["echo changed > greeting.txt", "root"] }];
    const third = await build("b3", changed);
    assert.equal(third.result.ok, true, third.result.message);
    assert.deepEqual(
      third.logs.filter((l) => l.message.startsWith("CACHED")).map((l) => l.step),
      ["1", "2"],
    );
  });

  test("a COPY whose download is not what its files hash names fails its step, before any sandbox boots", async () => {
    const files = await upload("lying", { "app/x.txt": "what is served\n" });
    const claimed = createHash("sha256").update("what the hash names").digest("hex");
    const failed = await build("lying1", [
      { type: "COPY", args: ["app", "/srv/app/"], filesHash: claimed, filesUrl: files.url },
    ]);
    assert.equal(failed.result.ok, false);
    assert.equal(failed.result.step, "1");
    assert.match(failed.result.message, new RegExp(`SHA-256 is ${files.hash}, not ${claimed}`));
    const bare = await build("lying2", [
      { type: "COPY", args: ["app", "/srv/app/"], filesHash: "h1", filesUrl: files.url },
    ]);
    assert.equal(bare.result.ok, false);
    assert.match(bare.result.message, /must be the SHA-256/);
  });

  test("a cold start from a build (snapshots off) runs its start command (a secured sandbox)", async () => {
    await orch.stop();
    await orch.restart({ MOAT_TEMPLATE_SNAPSHOTS: "off" });
    try {
      // Secured, as SDK sandboxes are: the node starts the command after /init set the token.
      const info = await createSandbox(orch, {
        templateID: "tpl1",
        buildID: "b1",
        memoryMB: 512,
        vcpu: 2,
        accessToken: "cold-start-token",
      });
      assert.equal(info.startKind, "cold");
      const r = await sdkFor(info).commands.run("curl -s -o /dev/null -w '%{http_code}' localhost:8000/");
      assert.equal(r.stdout, "200", "the start command was started and ready before the create answered");
      await orch.client.delete({ sandboxId: info.config!.sandboxId });
    } finally {
      await orch.stop();
      await orch.restart();
    }
  });

  test("a failing step fails the build with its output and exit code, keeping earlier layers", async () => {
    const layersBefore = await readdir(path.join(orch.dataDir, "templates", "layers"));
    const failed = await build("bad1", [
      { type: "RUN", args: ["echo step-one-ok > /tmp/one"] },
      { type: "RUN", args: ["echo about to fail; echo oops >&2; exit 7"] },
    ]);
    assert.equal(failed.result.ok, false);
    assert.equal(failed.result.step, "2");
    assert.match(failed.result.message, /exited with code 7/);
    assert.match(failed.result.message, /oops/);
    const layersAfter = await readdir(path.join(orch.dataDir, "templates", "layers"));
    assert.equal(layersAfter.filter((n) => !n.startsWith(".")).length, layersBefore.length + 1);
    const builds = await readdir(path.join(orch.dataDir, "templates", "builds"));
    assert.ok(!builds.includes("bad1"), "no half-built template");
    await assert.rejects(createSandbox(orch, { templateID: "tpl1", buildID: "bad1" }), /not available/);
    const again = await build("bad2", [
      { type: "RUN", args: ["echo step-one-ok > /tmp/one"] },
      { type: "RUN", args: ["true"] },
    ]);
    assert.equal(again.result.ok, true);
    assert.equal(again.logs.filter((l) => l.message.startsWith("CACHED")).length, 1);
  });

  test("a node that crashes mid-build releases the build sandbox and its half-made layer on restart", async () => {
    const stream = templates.build({
      teamId: "team-1",
      templateId: "tpl1",
      buildId: "crash1",
      vcpu: 1,
      memoryMb: 512,
      fromBuildId: "base",
      steps: [{ type: "RUN", args: ["echo started; sleep 60"] }],
    });
    const iterator = stream[Symbol.asyncIterator]();
    for (;;) {
      const next = await iterator.next();
      assert.ok(!next.done, "the build ran its step");
      if (next.value.event.case === "log" && next.value.event.value.message === "started") break;
    }
    await orch.stop("SIGKILL");
    await iterator.next().catch(() => undefined);
    const left = await readdir(path.join(orch.dataDir, "templates", "layers"));
    assert.ok(
      left.some((n) => n.startsWith(".tmp-")),
      "the crash left a half-made layer",
    );
    const sandboxes = await readdir(path.join(orch.dataDir, "sandboxes"));
    assert.ok(
      sandboxes.some((n) => n.startsWith("build-")),
      "and a build sandbox",
    );
    await orch.restart();
    const layers = await readdir(path.join(orch.dataDir, "templates", "layers"));
    assert.deepEqual(
      layers.filter((n) => n.startsWith(".tmp-")),
      [],
      "no half-made layer",
    );
    assert.deepEqual(await hostResources(orch), before0, "no build sandbox, netns, mount or container");
  });

  test("deleting builds removes the layers only they used, once no sandbox is on them", async () => {
    const layersDir = path.join(orch.dataDir, "templates", "layers");
    // The built-in templates' layers are links into the machine's cache (makeDataDir): not this
    // test's builds', and kept while those builds are there.
    const layers = async () => {
      const names = (await readdir(layersDir)).filter((n) => !n.startsWith("."));
      const own = await Promise.all(
        // A layer may go between the readdir and its lstat: the sweep runs after a delete.
        names.map(async (n) => {
          const st = await lstat(path.join(layersDir, n)).catch(() => undefined);
          return !st || st.isSymbolicLink() ? undefined : n;
        }),
      );
      return own.filter((n): n is string => n !== undefined).sort();
    };
    const manifest = async (id: string) =>
      JSON.parse(
        await readFile(path.join(orch.dataDir, "templates", "builds", id, "build.json"), "utf8"),
      ) as {
        layers: string[];
      };
    const [b1, b3, bad2] = await Promise.all(["b1", "b3", "bad2"].map(manifest));
    const info = await createSandbox(orch, { templateID: "tpl1", buildID: "b3", memoryMB: 512, vcpu: 2 });
    await templates.deleteBuild({ buildId: "b1" });
    await templates.deleteBuild({ buildId: "b2" });
    const onlyB1 = b1!.layers.filter((k) => !b3!.layers.includes(k));
    assert.ok(onlyB1.length > 0);
    for (const key of onlyB1) assert.ok(!(await layers()).includes(key), "a layer no build uses is gone");
    await templates.deleteBuild({ buildId: "b3" });
    for (const key of b3!.layers)
      assert.ok((await layers()).includes(key), "a running sandbox's layers stay");
    assert.equal(
      (await sdkFor(info).commands.run("cat greeting.txt", { cwd: "/srv/app" })).stdout,
      "changed\n",
      "the sandbox of a deleted build goes on working",
    );
    await orch.client.delete({ sandboxId: info.config!.sandboxId });
    for (let i = 0; i < 100 && (await layers()).length > bad2!.layers.length; i++) {
      await new Promise((r) => setTimeout(r, 50));
    }
    assert.deepEqual(await layers(), [...new Set(bad2!.layers)].sort(), "what is left is what builds use");
  });

  test("builds leave no sandbox, network or mount behind", async () => {
    assert.deepEqual(await settledHostResources(orch, before0), before0);
  });
});
