/**
 * Custom templates end to end: the unmodified e2b SDK's `Template` builder against `moat up`. A
 * template from the base image with apt and pip installs (a wheel this test makes: no Python index
 * is reachable), copied files, env, workdir, user and a start command whose server answers through
 * the proxy; a rebuild from the cache; a failing step; a template from an OCI image this test builds
 * and pushes to a real registry on loopback.
 */
import assert from "node:assert/strict";
import { execFile, execFileSync } from "node:child_process";
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { gzipSync } from "node:zlib";
import { findBaseTemplate } from "@moat/orchestrator";
import { BuildError, Sandbox, Template, waitForPort } from "e2b";
import { getByHost, type RunningMoat, startMoat, useMoat } from "../helpers/moat-up.js";
import { CACHE_DIR } from "../helpers/orchestrator.js";
import { type LocalRegistry, startRegistry, startTokenAuth } from "../helpers/registry.js";

const execFileAsync = promisify(execFile);
const E2B_CLI = fileURLToPath(new URL("../../../node_modules/@e2b/cli/dist/index.js", import.meta.url));

/** A pure-Python wheel, made with python3's zipfile (RECORD hashes as pip checks them). */
const MAKE_WHEEL = `
import base64, hashlib, sys, zipfile
files = {
  "moat_hello/__init__.py": "def hello():\\n    return 'hello from a wheel'\\n",
  "moat_hello-1.0.dist-info/METADATA": "Metadata-Version: 2.1\\nName: moat-hello\\nVersion: 1.0\\n",
  "moat_hello-1.0.dist-info/WHEEL": "Wheel-Version: 1.0\\nGenerator: moat-test\\nRoot-Is-Purelib: true\\nTag: py3-none-any\\n",
}
record = []
with zipfile.ZipFile(sys.argv[1], "w") as z:
  for name, text in files.items():
    data = text.encode()
    z.writestr(name, data)
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    record.append(f"{name},sha256={digest},{len(data)}")
  record.append("moat_hello-1.0.dist-info/RECORD,,")
  z.writestr("moat_hello-1.0.dist-info/RECORD", "\\n".join(record) + "\\n")
`;

const SERVER = `
import getpass, json, os
from http.server import BaseHTTPRequestHandler, HTTPServer
import moat_hello

class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        body = json.dumps({
            "greeting": os.environ.get("GREETING"),
            "hello": moat_hello.hello(),
            "cwd": os.getcwd(),
            "user": getpass.getuser(),
            "config": open("config.json").read().strip(),
        }).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.end_headers()
        self.wfile.write(body)

HTTPServer(("0.0.0.0", 8080), Handler).serve_forever()
`;

describe("moat up: custom templates with the SDK's Template builder", { timeout: 1_200_000 }, () => {
  let moat: RunningMoat;
  let context: string;
  let registry: LocalRegistry;
  const logs: string[] = [];
  const onBuildLogs = (entry: { message: string }) => logs.push(entry.message);

  before(async () => {
    // The test's registry is on loopback, which image pulls refuse unless the operator allows it.
    moat = await startMoat({ env: { MOAT_REGISTRY_ALLOW: "127.0.0.1" } });
    useMoat(moat);
    context = await mkdtemp(path.join(tmpdir(), "moat-test-context-"));
    await mkdir(path.join(context, "app"));
    await writeFile(path.join(context, "app", "server.py"), SERVER);
    await writeFile(path.join(context, "app", "config.json"), '{"mode": "test"}\n');
    await mkdir(path.join(context, "wheels"));
    execFileSync("python3", [
      "-c",
      MAKE_WHEEL,
      path.join(context, "wheels", "moat_hello-1.0-py3-none-any.whl"),
    ]);
  });

  after(async () => {
    await moat?.cleanup();
    await registry?.stop();
    await rm(context, { recursive: true, force: true });
  });

  const webTemplate = (version: string) =>
    Template({ fileContextPath: context })
      .fromBaseImage()
      .aptInstall(["jq"])
      .copy("wheels/moat_hello-1.0-py3-none-any.whl", "/tmp/wheels/")
      .pipInstall("/tmp/wheels/moat_hello-1.0-py3-none-any.whl")
      .copy("app", "/home/user/app", { user: "user", mode: 0o640 })
      .setEnvs({ GREETING: "hello from the template" })
      .setWorkdir("/home/user/app")
      .setUser("user")
      .runCmd(`echo ${version} > version.txt`)
      .setStartCmd("python3 server.py", waitForPort(8080));

  test("a template from the base image: apt, pip, files, env, workdir, user and a start command", async () => {
    logs.length = 0;
    const info = await Template.build(webTemplate("v1"), "moat-web", {
      cpuCount: 2,
      memoryMB: 512,
      onBuildLogs,
    }).catch((err: unknown) => {
      throw new Error(`the build failed: ${String(err)}\n${logs.join("\n")}`);
    });
    assert.ok(info.templateId);
    assert.ok(
      logs.some((m) => m.includes("Setting up jq")),
      "apt's output streams to the SDK",
    );
    assert.ok(
      logs.some((m) => /Successfully installed moat-hello-1.0/.test(m)),
      "pip installed the wheel",
    );

    const sbx = await Sandbox.create("moat-web");
    try {
      // The start command was running when the snapshot was taken: it answers at once.
      const res = await getByHost(moat, sbx.sandboxId, 8080, "/");
      assert.equal(res.status, 200, res.body);
      assert.deepEqual(JSON.parse(res.body), {
        greeting: "hello from the template",
        hello: "hello from a wheel",
        cwd: "/home/user/app",
        user: "user",
        config: '{"mode": "test"}',
      });
      const r = await sbx.commands.run(
        "pwd; whoami; echo $GREETING; cat version.txt; jq -n 1; stat -c '%U %a' config.json server.py",
      );
      assert.equal(r.stdout, "/home/user/app\nuser\nhello from the template\nv1\n1\nuser 640\nuser 640\n");
      assert.equal(sbx.getInfo !== undefined, true);
      const listed = await Sandbox.getInfo(sbx.sandboxId);
      assert.equal(listed.templateId, info.templateId);
    } finally {
      await sbx.kill();
    }
  });

  test("a rebuild reuses every cached layer; a changed last step reruns only it", async () => {
    logs.length = 0;
    const started = performance.now();
    await Template.build(webTemplate("v1"), "moat-web", { cpuCount: 2, memoryMB: 512, onBuildLogs });
    const cachedSeconds = (performance.now() - started) / 1000;
    const cached = logs.filter((m) => m.startsWith("CACHED"));
    assert.equal(
      cached.length,
      6,
      `every RUN and COPY layer and the snapshot came from the cache:\n${logs.join("\n")}`,
    );
    assert.ok(!logs.some((m) => m.includes("Setting up jq")), "apt did not run again");

    logs.length = 0;
    await Template.build(webTemplate("v2"), "moat-web", { cpuCount: 2, memoryMB: 512, onBuildLogs });
    assert.equal(logs.filter((m) => m.startsWith("CACHED")).length, 4, "only the changed last step ran");
    assert.ok(logs.some((m) => m.includes("echo v2 > version.txt") && !m.startsWith("CACHED")));
    const sbx = await Sandbox.create("moat-web");
    try {
      assert.equal(
        (await sbx.commands.run("cat version.txt")).stdout,
        "v2\n",
        "creates use the newest build",
      );
    } finally {
      await sbx.kill();
    }
    assert.ok(cachedSeconds < 10, `a fully cached rebuild took ${cachedSeconds} s`);
  });

  test("a template built from another template (fromTemplate) has its layers and settings", async () => {
    const derived = Template().fromTemplate("moat-web").runCmd("echo derived > derived.txt");
    await Template.build(derived, "moat-derived", { cpuCount: 1, memoryMB: 512 });
    const sbx = await Sandbox.create("moat-derived");
    try {
      const r = await sbx.commands.run("pwd; whoami; echo $GREETING; cat version.txt derived.txt");
      assert.equal(r.stdout, "/home/user/app\nuser\nhello from the template\nv2\nderived\n");
    } finally {
      await sbx.kill();
    }
  });

  test("a failing step fails the build with its output and exit code", async () => {
    const broken = Template().fromBaseImage().runCmd("echo fine").runCmd("echo broken-step >&2; exit 3");
    await assert.rejects(Template.build(broken, "moat-broken", { onBuildLogs }), (err: unknown) => {
      assert.ok(err instanceof BuildError, String(err));
      assert.match(err.message, /exited with code 3/);
      assert.match(err.message, /broken-step/);
      return true;
    });
    await assert.rejects(Sandbox.create("moat-broken"), /not found|no ready build|404/i);
  });

  test("the E2B CLI builds a Dockerfile (template create), lists and deletes it", async () => {
    const dir = await mkdtemp(path.join(tmpdir(), "moat-test-cli-"));
    await writeFile(
      path.join(dir, "e2b.Dockerfile"),
      "FROM e2bdev/base\nRUN echo from-dockerfile > /home/user/df.txt\nCOPY hello.txt /home/user/hello.txt\nENV DF_VAR=yes\n",
    );
    await writeFile(path.join(dir, "hello.txt"), "hello from the context\n");
    // Asynchronously: a blocked event loop would let the API close the SDK's idle connections
    // under it.
    const cli = async (...args: string[]) =>
      (
        await execFileAsync(process.execPath, [E2B_CLI, ...args], {
          cwd: dir,
          env: { ...process.env, HOME: dir, NO_COLOR: "1" },
          encoding: "utf8",
          timeout: 600_000,
        })
      ).stdout;
    try {
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
      assert.match(out, /moat-cli/);
      const sbx = await Sandbox.create("moat-cli");
      try {
        const r = await sbx.commands.run("cat /home/user/df.txt /home/user/hello.txt; echo $DF_VAR; whoami");
        assert.equal(r.stdout, "from-dockerfile\nhello from the context\nyes\nuser\n");
      } finally {
        await sbx.kill();
      }
      const listed = JSON.parse(await cli("template", "list", "--format", "json")) as Array<{
        aliases: string[];
      }>;
      assert.ok(
        listed.some((t) => t.aliases.includes("moat-cli")),
        JSON.stringify(listed),
      );
      await cli("template", "delete", "moat-cli", "--yes");
      await assert.rejects(Sandbox.create("moat-cli"), /not found|404/i);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  test("a template from an OCI image pulled from a registry on loopback", async () => {
    registry = await startRegistry();
    // The image: the base template's Debian without its `user`, tini or docs (zstd), and a small
    // gzip layer with the image's own file. moat provisions what sandboxes need.
    const base = await findBaseTemplate(CACHE_DIR);
    assert.ok(base, "moat setup built the base template");
    const rootfs = base.rootfs;
    const debian = execFileSync(
      "tar",
      [
        "-C",
        rootfs,
        "--exclude=./usr/share/doc",
        "--exclude=./usr/share/locale",
        "--exclude=./usr/share/man",
        "--exclude=./usr/bin/tini",
        "--exclude=./usr/bin/tini-static",
        "--exclude=./home/user",
        "--exclude=./etc/sudoers.d/90-moat-user",
        "-cf",
        "-",
        ".",
      ],
      { maxBuffer: 1 << 30 },
    );
    const passwd = (file: string) =>
      execFileSync("grep", ["-v", "^user:", path.join(rootfs, "etc", file)]).toString();
    const extraDir = await mkdtemp(path.join(tmpdir(), "moat-test-layer-"));
    await mkdir(path.join(extraDir, "etc"));
    await mkdir(path.join(extraDir, "opt", "app"), { recursive: true });
    for (const file of ["passwd", "group", "shadow"])
      await writeFile(path.join(extraDir, "etc", file), passwd(file));
    await writeFile(path.join(extraDir, "opt", "app", "hello.txt"), "from the image\n");
    const extra = execFileSync("tar", ["-C", extraDir, "-cf", "-", "etc", "opt"]);
    await rm(extraDir, { recursive: true, force: true });
    await registry.pushImage(
      "moat/debian",
      "test",
      [
        {
          mediaType: "application/vnd.oci.image.layer.v1.tar+zstd",
          blob: execFileSync("zstd", ["-1", "-q", "-c"], { input: debian, maxBuffer: 1 << 30 }),
          tar: debian,
        },
        { mediaType: "application/vnd.oci.image.layer.v1.tar+gzip", blob: gzipSync(extra), tar: extra },
      ],
      {
        config: {
          Env: ["PATH=/usr/local/bin:/usr/bin:/bin", "IMAGE_VAR=from-image"],
          WorkingDir: "/opt/app",
        },
      },
    );

    const template = Template()
      .fromImage(`${registry.host}/moat/debian:test`)
      .runCmd("cat hello.txt > /home/user/copied.txt && id -un");
    logs.length = 0;
    await Template.build(template, "moat-from-image", { cpuCount: 1, memoryMB: 512, onBuildLogs }).catch(
      (err: unknown) => {
        throw new Error(`${(err as Error).message}\nbuild log:\n${logs.join("\n")}`);
      },
    );
    assert.ok(
      logs.some((m) => m.includes("created the user 'user'")),
      logs.join("\n"),
    );
    const sbx = await Sandbox.create("moat-from-image");
    try {
      const r = await sbx.commands.run("whoami; pwd; cat /home/user/copied.txt; echo $IMAGE_VAR");
      assert.equal(r.stdout, "user\n/opt/app\nfrom the image\nfrom-image\n");
    } finally {
      await sbx.kill();
    }

    // The same image behind a registry's Bearer-token auth: the SDK's credentials get the token.
    const front = await startTokenAuth(registry, { username: "alice", password: "secret" }, "moat/debian");
    try {
      const image = `${front.host}/moat/debian:test`;
      await assert.rejects(
        Template.build(Template().fromImage(image, { username: "alice", password: "wrong" }), "moat-private"),
        /401.*check the registry credentials/s,
      );
      logs.length = 0;
      await Template.build(
        Template()
          .fromImage(image, { username: "alice", password: "secret" })
          .runCmd("echo private > /home/user/p.txt"),
        "moat-private",
        { cpuCount: 1, memoryMB: 512, onBuildLogs },
      ).catch((err: unknown) => {
        throw new Error(`${(err as Error).message}\nbuild log:\n${logs.join("\n")}`);
      });
      const priv = await Sandbox.create("moat-private");
      try {
        assert.equal((await priv.commands.run("cat /home/user/p.txt")).stdout, "private\n");
      } finally {
        await priv.kill();
      }
    } finally {
      front.close();
    }
  });
});
