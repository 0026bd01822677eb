/**
 * Hostile tenant vs the node's storage, with the unmodified e2b SDK against `moat up`: a sandbox
 * filling its disk, root inside a sandbox planting a setuid-root shell and a device node for a
 * host user to find, a sandbox looking for the host checkout, and a host user reading the data
 * directory. Each boundary here failed before its fix (holes 5 and 7 of issue 11).
 */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { closeSync, openSync } from "node:fs";
import { chmod, readdir, readFile, stat, statfs } from "node:fs/promises";
import path from "node:path";
import { after, afterEach, before, describe, test } from "node:test";
import { BuildError, CommandExitError, Sandbox, Template } from "e2b";
import { releasesDone } from "../helpers/host-state.js";
import { type RunningMoat, startMoat, useMoat } from "../helpers/moat-up.js";
import { hostResources, settledHostResources } from "../helpers/orchestrator.js";

/** Small, so that filling it is quick; the node's default is 10 GiB. */
const DISK_MB = 256;
const MIB = 1024 * 1024;
/** A host user with no rights of its own (nobody). */
const NOBODY = 65534;

/** Runs a command in the sandbox; a failing one answers its exit code instead of throwing. */
async function run(
  sbx: Sandbox,
  command: string,
  opts: { user?: "root" | "user"; timeoutMs?: number } = {},
): Promise<{ exitCode: number; stdout: string; stderr: string }> {
  try {
    const r = await sbx.commands.run(command, { user: opts.user, timeoutMs: opts.timeoutMs ?? 120_000 });
    return { exitCode: r.exitCode, stdout: r.stdout, stderr: r.stderr };
  } catch (err) {
    if (err instanceof CommandExitError)
      return { exitCode: err.exitCode, stdout: err.stdout, stderr: err.stderr };
    throw err;
  }
}

/** `argv` run on the host as nobody; `fd` (opened by root) becomes its fd 3. */
function asNobody(
  argv: string[],
  fd?: number,
): { status: number | null; stdout: string; stderr: string; error?: string } {
  const r = spawnSync(argv[0]!, argv.slice(1), {
    uid: NOBODY,
    gid: NOBODY,
    stdio: ["ignore", "pipe", "pipe", ...(fd === undefined ? [] : [fd])],
    encoding: "utf8",
    timeout: 10_000,
  });
  return {
    status: r.status,
    stdout: r.stdout,
    stderr: r.stderr,
    error: (r.error as NodeJS.ErrnoException | undefined)?.code,
  };
}

/** Runs the setuid shell `file` as nobody, handed over as an open file (as if a path reached it). */
function runHandedOver(file: string): {
  status: number | null;
  stdout: string;
  stderr: string;
  error?: string;
} {
  const fd = openSync(file, "r");
  try {
    return asNobody(["/proc/self/fd/3", "-p", "-c", "id -u"], fd);
  } finally {
    closeSync(fd);
  }
}

/** Every path under `dir` named `name`, entering mounts (root walks what no one else may). */
async function findUnder(dir: string, name: string): Promise<string[]> {
  const found: string[] = [];
  const entries = await readdir(dir, { withFileTypes: true }).catch(() => []);
  for (const entry of entries) {
    const file = path.join(dir, entry.name);
    if (entry.name === name) found.push(file);
    if (entry.isDirectory()) found.push(...(await findUnder(file, name)));
  }
  return found;
}

/** Mount options (per-mount and superblock) of every mount under `dir`. */
async function mountOptionsUnder(dir: string): Promise<Map<string, string>> {
  const info = await readFile("/proc/self/mountinfo", "utf8");
  const mounts = new Map<string, string>();
  for (const line of info.split("\n")) {
    const fields = line.split(" ");
    if (fields[4]?.startsWith(`${dir}/`)) mounts.set(fields[4], fields[5] ?? "");
  }
  return mounts;
}

function mode(st: { mode: number }): string {
  return (st.mode & 0o7777).toString(8).padStart(4, "0");
}

async function hostFreeBytes(dir: string): Promise<number> {
  const s = await statfs(dir);
  return s.bavail * s.bsize;
}

/** Bytes the host gave to everything under `dir` (allocated blocks, sparse files as they are). */
function allocatedBytes(dir: string): number {
  // -x: the host's own file system (the disk image as it is), not the mounts inside.
  const r = spawnSync("du", ["-s", "-x", "--block-size=1", dir], { encoding: "utf8" });
  return Number(r.stdout.split("\t")[0]);
}

async function apiGet<T = Record<string, unknown>>(moat: RunningMoat, route: string): Promise<T> {
  const res = await fetch(`${moat.env.E2B_API_URL}${route}`, {
    headers: { "X-API-Key": moat.env.E2B_API_KEY! },
  });
  assert.equal(res.status, 200, await res.clone().text());
  return (await res.json()) as T;
}

describe("hostile: storage", { timeout: 1_200_000 }, () => {
  let moat: RunningMoat;
  const sandboxDir = (id: string) => path.join(moat.dataDir, "sandboxes", id);
  /** Sandboxes a test made: killed after it, whatever happened, so tests do not leak into each other. */
  const made: string[] = [];
  const create = async (template = "base", opts?: Parameters<typeof Sandbox.create>[1]) => {
    const sbx = await Sandbox.create(template, opts);
    made.push(sbx.sandboxId);
    return sbx;
  };

  before(async () => {
    moat = await startMoat({ env: { MOAT_DISK_SIZE_MB: String(DISK_MB) } });
    useMoat(moat);
  });

  afterEach(async () => {
    await Promise.all(made.splice(0).map((id) => Sandbox.kill(id).catch(() => undefined)));
  });

  after(async () => {
    if (!moat) return;
    await moat.stop();
    // Kills and the stop released every disk: no mount, no loop device left on its images.
    const left = await hostResources(moat);
    assert.deepEqual(left.mounts, [], "no overlay or disk mount left");
    assert.deepEqual(left.loops, [], "no loop device left");
    await moat.cleanup();
  });

  test("writing past the disk size fails with ENOSPC inside; the host, the API and another sandbox do not notice", async () => {
    const filler = await create();
    const neighbour = await create();
    const dir = sandboxDir(filler.sandboxId);

    // The size is the template's (here the deployment's) and shows where it naturally does.
    const detail = await apiGet(moat, `/sandboxes/${filler.sandboxId}`);
    assert.equal(detail.diskSizeMB, DISK_MB, "the API reports the sandbox's disk size");
    const kept = randomBytes(2 * MIB);
    await filler.files.write("/home/user/kept.bin", new Blob([kept]));
    const hostFree = await hostFreeBytes(moat.dataDir);

    const dd = await run(filler, "dd if=/dev/zero of=/home/user/fill bs=1M count=2048 conv=fsync", {
      timeoutMs: 300_000,
    });
    assert.notEqual(dd.exitCode, 0, `dd past the disk size must fail: ${dd.stderr}`);
    assert.match(dd.stderr, /No space left on device/);
    const fallocate = await run(filler, "fallocate -l 1G /home/user/more");
    assert.notEqual(fallocate.exitCode, 0, "fallocate past the disk size must fail");
    assert.match(fallocate.stderr, /No space left on device/);
    const asRoot = await run(filler, "head -c 64M /dev/zero > /root/as-root", { user: "root" });
    assert.notEqual(asRoot.exitCode, 0, "root inside has no reserve beyond the disk size either");

    // Inside, df shows the disk's size.
    const df = await run(filler, "df -B1 --output=size / | tail -1");
    const total = Number(df.stdout.trim());
    assert.ok(
      total > (DISK_MB - 32) * MIB && total <= DISK_MB * MIB,
      `df / inside is the disk size: ${total}`,
    );

    // The host gave the sandbox no more than its size, wherever it put the bytes.
    assert.ok(
      allocatedBytes(dir) <= (DISK_MB + 16) * MIB,
      `the sandbox holds ${allocatedBytes(dir)} bytes of the host's disk`,
    );
    const used = hostFree - (await hostFreeBytes(moat.dataDir));
    assert.ok(used < 1024 * MIB, `the host lost ${used} bytes of free space to a 2 GiB write`);

    // Everything else carries on: the API, another sandbox (which can write), and envd's metrics.
    assert.ok((await Sandbox.list().nextItems()).some((s) => s.sandboxId === neighbour.sandboxId));
    const blob = randomBytes(8 * MIB);
    await neighbour.files.write("/home/user/blob.bin", new Blob([blob]));
    const back = Buffer.from(await neighbour.files.read("/home/user/blob.bin", { format: "bytes" }));
    assert.ok(back.equals(blob), "the neighbour writes and reads 8 MiB");
    // The node samples all its sandboxes every MOAT_METRICS_INTERVAL (5 s): a young one may have none yet.
    let metrics = (await filler.getMetrics()).at(-1);
    for (const deadline = Date.now() + 15_000; !metrics && Date.now() < deadline; ) {
      await new Promise((r) => setTimeout(r, 500));
      metrics = (await filler.getMetrics()).at(-1);
    }
    assert.ok(metrics, "the API reads envd's metrics");
    assert.equal(metrics.diskTotal, total, "envd's disk_total is the disk's size");

    // Deleting frees the room again.
    const after = await run(
      filler,
      "rm -f /home/user/fill /home/user/more && head -c 16M /dev/zero > /home/user/again && echo ok",
    );
    assert.equal(after.stdout.trim(), "ok", after.stderr);

    // The files and the limit survive a pause and resume (the disk is mounted again).
    assert.equal(await filler.pause(), true);
    const resumed = await Sandbox.connect(filler.sandboxId);
    const read = Buffer.from(await resumed.files.read("/home/user/kept.bin", { format: "bytes" }));
    assert.equal(
      createHash("sha256").update(read).digest("hex"),
      createHash("sha256").update(kept).digest("hex"),
    );
    const again = await run(resumed, "fallocate -l 1G /home/user/more");
    assert.match(again.stderr, /No space left on device/, "still limited after the resume");
    await Promise.all([resumed.kill(), neighbour.kill()]);
    assert.deepEqual(
      (await settledHostResources(moat, { loops: [] })).loops,
      [],
      "killing them released their disks' loop devices",
    );
  });

  test("a setuid-root shell and a device node planted from inside are inert on the host", async () => {
    const sbx = await create();
    const dir = sandboxDir(sbx.sandboxId);
    const plant = await run(
      sbx,
      "cp /bin/bash /tmp/rootbash && chmod 4755 /tmp/rootbash && cp /bin/bash /home/user/rootbash2 && chmod 4755 /home/user/rootbash2",
      { user: "root" },
    );
    assert.equal(plant.exitCode, 0, plant.stderr);
    const mknod = await run(sbx, "mknod /tmp/nulldev c 1 3 && echo made", { user: "root" });

    // The host's copies: root-owned and setuid, as planted...
    const copies = [...(await findUnder(dir, "rootbash")), ...(await findUnder(dir, "rootbash2"))];
    assert.ok(copies.length > 0, "the planted files are somewhere under the sandbox's directory");
    for (const copy of copies) {
      const st = await stat(copy);
      assert.equal(st.uid, 0);
      assert.ok(st.mode & 0o4000, `${copy} is setuid (${mode(st)})`);
      // ...but a host user cannot reach them through the data directory...
      const walk = asNobody(["stat", copy]);
      assert.notEqual(walk.status, 0, `nobody reaches ${copy}`);
      assert.match(walk.stderr, /Permission denied/);
      // ...and even handed an open file, running it gains nothing: the mount is nosuid.
      let ran = runHandedOver(copy);
      if (ran.error === "ETXTBSY") {
        // gVisor still holds the file open for writing: a setuid-root copy beside it, on the same
        // mount, stands in for it (nosuid is the mount's).
        spawnSync("cp", ["-p", copy, `${copy}.copy`]);
        ran = runHandedOver(`${copy}.copy`);
      }
      assert.equal(ran.status, 0, `${ran.error ?? ""} ${ran.stderr}`);
      assert.equal(ran.stdout.trim(), String(NOBODY), `${copy} runs as nobody, not as root`);
    }
    // A device node (if gVisor let root make one) opens nothing on the host: the mount is nodev.
    if (mknod.stdout.includes("made")) {
      for (const node of await findUnder(dir, "nulldev")) {
        assert.throws(() => closeSync(openSync(node, "r")), /EACCES/, `${node} must not open a device`);
      }
    }
    // Every mount holding the sandbox's files has nosuid and nodev.
    const mounts = await mountOptionsUnder(dir);
    assert.ok(mounts.size >= 1, "the sandbox has its mounts");
    for (const [point, options] of mounts) {
      assert.match(options, /(^|,)nosuid(,|$)/, `${point} is nosuid: ${options}`);
      assert.match(options, /(^|,)nodev(,|$)/, `${point} is nodev: ${options}`);
    }
    await sbx.kill();
  });

  test("a sandbox sees envd's files of the host checkout and nothing else of it", async () => {
    const sbx = await create();
    // Nothing of the checkout: no .git, package.json, .env, .npmrc, sources or other modules.
    const found = await run(
      sbx,
      "find /opt/moat / -xdev \\( -name .git -o -name .npmrc -o -name package-lock.json -o -name tsconfig.base.json -o -name biome.json \\) 2>/dev/null; ls /opt/moat",
      { user: "root" },
    );
    assert.deepEqual(found.stdout.trim().split("\n").sort(), ["envd", "node"], found.stdout);
    const listing = await run(sbx, "cd /opt/moat/envd && find . -maxdepth 3 | sort");
    const entries = listing.stdout.trim().split("\n");
    assert.ok(entries.includes("./envd.mjs") && entries.includes("./sudo.mjs") && entries.includes("./sudo"));
    assert.deepEqual(
      entries.filter((e) => e.startsWith("./node_modules/")).filter((e) => e.split("/").length === 3),
      ["./node_modules/@napi-rs", "./node_modules/node-pty"],
      "only the native modules envd loads",
    );
    const mounts = await run(sbx, "cat /proc/mounts");
    assert.doesNotMatch(mounts.stdout, /\/opt\/moat\/app/);
    // The data directory (its path on the host) is not there either.
    const dataDir = await run(sbx, `ls -d ${moat.dataDir} 2>&1; ls /opt/moat/envd/.env 2>&1`);
    assert.match(dataDir.stdout, /No such file/);
    // What envd needs still works: sudo (the wrapper and sudo.mjs), a PTY (node-pty), and both
    // native modules load from there with their runtime files.
    const sudo = await run(sbx, "sudo id -u");
    assert.equal(sudo.stdout.trim(), "0", sudo.stderr);
    let output = "";
    const pty = await sbx.pty.create({
      cols: 80,
      rows: 24,
      onData: (d) => (output += Buffer.from(d).toString()),
    });
    await sbx.pty.sendInput(pty.pid, new TextEncoder().encode("echo pty-$((6*7))\nexit\n"));
    await pty.wait().catch(() => undefined);
    assert.match(output, /pty-42/);
    const load = await run(
      sbx,
      `/opt/moat/node -e 'const r = require("node:module").createRequire("/opt/moat/envd/envd.mjs"); r("node-pty"); r("@napi-rs/xattr"); console.log("loaded")'`,
    );
    assert.equal(load.stdout.trim(), "loaded", load.stderr);
    await sbx.kill();
  });

  test("template build sandboxes have the disk size too; a step's files still become a layer", async () => {
    // The sandbox the test before killed may still be releasing its disk.
    await releasesDone(moat.dataDir);
    const loopsBefore = (await hostResources(moat)).loops;
    const logs: string[] = [];
    const filling = Template()
      .fromBaseImage()
      .runCmd("echo kept > /home/user/kept.txt")
      .runCmd("fallocate -l 1G /home/user/huge");
    await assert.rejects(
      Template.build(filling, "storage-filler", { onBuildLogs: (l) => logs.push(l.message) }),
      (err: unknown) => err instanceof BuildError,
    );
    assert.match(logs.join("\n"), /No space left on device/, "the step fails with ENOSPC");
    assert.deepEqual((await hostResources(moat)).loops, loopsBefore, "the failed build released its disk");

    const info = await Template.build(
      Template()
        .fromBaseImage()
        .runCmd("head -c 1M /dev/urandom > /home/user/layer.bin && chmod 4755 /home/user/layer.bin"),
      "storage-layered",
    );
    const listed = await apiGet<Array<{ templateID: string; diskSizeMB: number }>>(moat, "/templates");
    const template = listed.find((t) => t.templateID === info.templateId);
    assert.equal(template?.diskSizeMB, DISK_MB, "the template reports its disk size");
    const sbx = await create("storage-layered");
    const st = await run(sbx, "stat -c '%a %U %s' /home/user/layer.bin");
    assert.equal(
      st.stdout.trim(),
      "4755 user 1048576",
      "the step's file, as it made it, from the cached layer",
    );
    const fill = await run(sbx, "fallocate -l 1G /home/user/huge");
    assert.match(fill.stderr, /No space left on device/, "its sandboxes are limited as well");
    await sbx.kill();
  });

  test("the data directory is 0700 and its secrets 0600, also after a start on one left open", async () => {
    const sbx = await create("base", { envs: { SECRET_TOKEN: "hunter2" } });
    await sbx.files.write("/home/user/secret.txt", "tenant data");
    assert.equal(await sbx.pause(), true);
    const dir = sandboxDir(sbx.sandboxId);
    const secrets = {
      ".env": path.join(moat.dataDir, ".env"),
      record: path.join(dir, "sandbox.json"),
    };
    const privateDirs = {
      "data dir": moat.dataDir,
      db: path.join(moat.dataDir, "db"),
      sandboxes: path.join(moat.dataDir, "sandboxes"),
      sandbox: dir,
      "memory image": path.join(dir, "memory"),
      templates: path.join(moat.dataDir, "templates"),
    };
    const check = async (when: string) => {
      for (const [what, file] of Object.entries(privateDirs))
        assert.equal(mode(await stat(file)), "0700", `${what} ${when}`);
      for (const [what, file] of Object.entries(secrets))
        assert.equal(mode(await stat(file)), "0600", `${what} ${when}`);
      for (const name of await readdir(path.join(dir, "memory")))
        assert.equal(mode(await stat(path.join(dir, "memory", name))), "0600", `memory/${name} ${when}`);
      for (const file of [secrets.record, secrets[".env"], path.join(moat.dataDir, "db", "PG_VERSION")]) {
        const read = asNobody(["cat", file]);
        assert.notEqual(read.status, 0, `nobody reads ${file} ${when}`);
        assert.doesNotMatch(read.stdout, /hunter2|E2B_API_KEY/);
      }
    };
    await check("as made");

    // A data directory an earlier version (or an operator) left open is tightened at the start.
    await moat.stop();
    for (const file of Object.values(privateDirs)) await chmod(file, 0o755);
    for (const file of Object.values(secrets)) await chmod(file, 0o644);
    await chmod(path.join(moat.dataDir, "db", "PG_VERSION"), 0o644);
    await moat.restart();
    await check("after a start on an open data directory");

    const resumed = await Sandbox.connect(sbx.sandboxId);
    assert.equal(await resumed.files.read("/home/user/secret.txt"), "tenant data");
    await resumed.kill();
  });
});
