/**
 * Volumes end to end, with the unmodified e2b SDK against `moat up`: the team's volumes, their
 * files through the SDK's `Volume` (the content routes) and inside sandboxes at the mount path,
 * shared by several sandboxes at once, kept across pause and resume and past the sandboxes, and
 * refused when in use. The hostile part: symlinks planted from inside a sandbox to the host's
 * files, then read, written, listed, chmod'ed and removed through the content routes; another
 * team's token and volume; a volume filled past its size. Nothing is left on the host.
 */
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { mkdtemp, readdir, readFile, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import { CommandExitError, Sandbox, Volume } from "e2b";
import { assertNoSandboxOutlives, type ForeignResources, foreignResources } from "../helpers/host-state.js";
import { type RunningMoat, startMoat, useMoat } from "../helpers/moat-up.js";

/** Small, so that mkfs is quick and filling one takes a moment. */
const VOLUME_MB = 48;
const MIB = 1024 * 1024;

async function run(
  sbx: Sandbox,
  command: string,
  user: "root" | "user" = "user",
): Promise<{ exitCode: number; stdout: string; stderr: string }> {
  try {
    const r = await sbx.commands.run(command, { user, timeoutMs: 120_000 });
    return { exitCode: r.exitCode, stdout: r.stdout, stderr: r.stderr };
  } catch (err) {
    if (err instanceof CommandExitError)
      return { exitCode: err.exitCode, stdout: err.stdout, stderr: err.stderr };
    throw err;
  }
}

/** The message of a rejected SDK call (its status is in it: "409: …"). */
async function failure(promise: Promise<unknown>): Promise<string> {
  try {
    await promise;
  } catch (err) {
    return (err as Error).message;
  }
  assert.fail("the call succeeded");
}

describe("moat up: volumes", { timeout: 600_000 }, () => {
  let moat: RunningMoat;
  let foreign: ForeignResources;
  /** Host files outside every volume that a planted symlink points at. */
  let canary: string;
  const sandboxes: Sandbox[] = [];
  const create = async (mounts: Record<string, Volume | string>) => {
    const sbx = await Sandbox.create("base", { volumeMounts: mounts, timeoutMs: 600_000 });
    sandboxes.push(sbx);
    return sbx;
  };

  before(async () => {
    foreign = await foreignResources();
    moat = await startMoat({ env: { MOAT_TEAM_VOLUME_SIZE_MB: String(VOLUME_MB) } });
    useMoat(moat);
    canary = await mkdtemp(path.join(tmpdir(), "moat-volume-canary-"));
    await writeFile(path.join(canary, "secret"), "host secret\n", { mode: 0o644 });
  });

  after(async () => {
    await Promise.allSettled(sandboxes.map((s) => s.kill()));
    if (moat) {
      const dataDir = moat.dataDir;
      // One volume is left: stopping moat unmounts it with everything else.
      await moat.stop();
      await assertNoSandboxOutlives(dataDir, foreign);
      await moat.cleanup();
    }
    if (canary) await rm(canary, { recursive: true, force: true });
  });

  test("create, list, get, delete; files written through the API are the sandbox's at the mount path, and back", async () => {
    const vol = await Volume.create("shared-data");
    const info = await Volume.getInfo(vol.volumeId);
    assert.equal(info.name, "shared-data");
    assert.equal(info.token, vol.token);
    assert.ok((await Volume.list()).some((v) => v.volumeId === vol.volumeId));
    const got = (await (
      await fetch(`${moat.env.E2B_API_URL}/volumes/${vol.volumeId}`, {
        headers: { "x-api-key": moat.env.E2B_API_KEY! },
      })
    ).json()) as { sizeMB: number; usedBytes: number };
    assert.equal(got.sizeMB, VOLUME_MB, "the volume's size is reported");
    assert.ok(got.usedBytes >= 0 && got.usedBytes < VOLUME_MB * MIB);

    await vol.writeFile("/from-api.txt", "written through the API\n");
    await vol.makeDir("/dir/sub", { force: true });
    const sbx = await create({ "/mnt/data": vol });
    assert.deepEqual((await sbx.getInfo()).volumeMounts, [{ name: "shared-data", path: "/mnt/data" }]);
    const listed = await Sandbox.list({ query: { state: ["running"] } }).nextItems();
    assert.deepEqual(listed.find((s) => s.sandboxId === sbx.sandboxId)?.volumeMounts, [
      { name: "shared-data", path: "/mnt/data" },
    ]);

    // `user` reads what the API wrote, and can change it: it is theirs (1000:1000).
    const seen = await run(
      sbx,
      "cat /mnt/data/from-api.txt && stat -c '%u:%g %a' /mnt/data/from-api.txt /mnt/data/dir /mnt/data",
    );
    assert.equal(seen.exitCode, 0, seen.stderr);
    assert.deepEqual(seen.stdout.trim().split("\n"), [
      "written through the API",
      "1000:1000 644",
      "1000:1000 755",
      "1000:1000 755",
    ]);
    const appended = await run(
      sbx,
      "echo appended by user >> /mnt/data/from-api.txt && touch /mnt/data/dir/sub/new",
    );
    assert.equal(appended.exitCode, 0, appended.stderr);
    assert.equal(await vol.readFile("/from-api.txt"), "written through the API\nappended by user\n");

    // What the sandbox writes (through envd's files API, and as root in a shell) the API reads.
    await sbx.files.write("/mnt/data/from-sandbox.txt", "written inside the sandbox");
    assert.equal(await vol.readFile("/from-sandbox.txt"), "written inside the sandbox");
    assert.equal((await vol.getInfo("/from-sandbox.txt")).uid, 1000);
    assert.equal((await run(sbx, "echo by root > /mnt/data/by-root", "root")).exitCode, 0);
    assert.equal(await vol.readFile("/by-root"), "by root\n");
    assert.equal((await vol.getInfo("/by-root")).uid, 0);
    // The API can hand it over to `user`.
    await vol.updateMetadata("/by-root", { uid: 1000, gid: 1000, mode: 0o664 });
    assert.equal((await run(sbx, "echo more >> /mnt/data/by-root")).exitCode, 0);
    assert.deepEqual(
      (await vol.list("/")).map((e) => `${e.type} ${e.name}`),
      ["file by-root", "directory dir", "file from-api.txt", "file from-sandbox.txt"],
    );
    await vol.remove("/dir");
    assert.equal((await run(sbx, "test -e /mnt/data/dir")).exitCode, 1);
  });

  test("two sandboxes share one volume: each sees the other's writes at once", async () => {
    const vol = await Volume.create("two-sandboxes");
    const [a, b] = await Promise.all([
      create({ "/mnt/v": vol }),
      create({ "/home/user/work": "two-sandboxes" }),
    ]);
    assert.equal((await run(a!, "echo from-a > /mnt/v/a.txt")).exitCode, 0);
    assert.equal((await run(b!, "cat /home/user/work/a.txt")).stdout, "from-a\n");
    assert.equal((await run(b!, "echo from-b >> /home/user/work/a.txt")).exitCode, 0);
    assert.equal((await run(a!, "cat /mnt/v/a.txt")).stdout, "from-a\nfrom-b\n");
    await vol.writeFile("/api.txt", "from the api");
    assert.equal((await run(a!, "cat /mnt/v/api.txt")).stdout, "from the api");
    assert.equal((await run(b!, "cat /home/user/work/api.txt")).stdout, "from the api");
    // A volume in use is not deleted, with a message naming who uses it.
    const refused = await failure(Volume.destroy(vol.volumeId));
    assert.match(
      refused,
      /^409: volume 'two-sandboxes' is mounted by sandboxes .* kill them before deleting/,
    );
    // A snapshot would outlive the mount its memory expects: refused. A fork mounts what its source does.
    assert.match(await failure(a!.createSnapshot()), /^409: .*cannot hold volume mounts/);
    const [fork] = await a!.fork({ timeoutMs: 120_000 });
    assert.equal((await run(fork!, "cat /mnt/v/api.txt")).stdout, "from the api");
    assert.equal((await run(fork!, "echo from-fork > /mnt/v/fork.txt")).exitCode, 0);
    assert.equal(await vol.readFile("/fork.txt"), "from-fork\n");
    await Promise.all([a!.kill(), b!.kill()]);
    assert.match(await failure(Volume.destroy(vol.volumeId)), /^409: .*mounted by sandbox/);
    await fork!.kill();
    assert.equal(await Volume.destroy(vol.volumeId), true);
    assert.equal(await Volume.destroy(vol.volumeId), false);
  });

  test("pause and resume keep the mount; the volume outlives its sandboxes; deleting it while paused is refused", async () => {
    const vol = await Volume.create("survivor");
    const sbx = await create({ "/mnt/keep": vol });
    assert.equal((await run(sbx, "echo before-pause > /mnt/keep/state")).exitCode, 0);
    assert.equal(await sbx.pause(), true);
    // While it is paused the volume is its: still refused.
    assert.match(
      await failure(Volume.destroy(vol.volumeId)),
      /^409: .*mounted by sandbox .*running or paused/,
    );
    await vol.writeFile("/while-paused", "written while the sandbox slept");
    const resumed = await Sandbox.connect(sbx.sandboxId, { timeoutMs: 600_000 });
    const after = await run(resumed, "cat /mnt/keep/state /mnt/keep/while-paused");
    assert.equal(after.exitCode, 0, after.stderr);
    assert.equal(after.stdout, "before-pause\nwritten while the sandbox slept");
    assert.deepEqual((await resumed.getInfo()).volumeMounts, [{ name: "survivor", path: "/mnt/keep" }]);
    await resumed.kill();
    // Gone with its sandbox? No: a new sandbox finds what the old one left.
    const next = await create({ "/data": "survivor" });
    assert.equal((await run(next, "cat /data/state")).stdout, "before-pause\n");
    await next.kill();
    assert.equal(await vol.readFile("/state"), "before-pause\n");
  });

  test("bad mounts and other teams' volumes: clear 400s, and no sandbox is left", async () => {
    const mine = await Volume.create("mine");
    const admin = await fetch(`${moat.env.E2B_API_URL}/admin/teams`, {
      method: "POST",
      headers: { "x-admin-token": moat.env.MOAT_ADMIN_TOKEN!, "content-type": "application/json" },
      body: JSON.stringify({ name: "other-team" }),
    });
    assert.equal(admin.status, 201);
    const other = { apiKey: ((await admin.json()) as { apiKey: string }).apiKey };
    const theirs = await Volume.create("theirs", other);
    const before = (await Sandbox.list().nextItems()).length;
    const cases: Array<[Record<string, string>, RegExp]> = [
      [{ "/mnt/x": "no-such-volume" }, /^400: volumeMounts: volume 'no-such-volume' not found in this team/],
      [{ "/mnt/x": "theirs" }, /^400: volumeMounts: volume 'theirs' not found in this team/],
      [{ "mnt/x": "mine" }, /^400: volumeMounts: volume 'mine': 'mnt\/x' is not an absolute path/],
      [{ "/mnt/x/../y": "mine" }, /not a normalised path/],
      [{ "/proc/self": "mine" }, /under \/proc, which moat or the system needs/],
      [{ "/": "mine" }, /system directory every sandbox needs/],
      [{ "/mnt/a": "mine", "/mnt/b": "mine" }, /^400: volumeMounts: volume 'mine' is mounted twice/],
      [{ "/mnt/a": "mine", "/mnt/a/b": "theirs" }, /is inside volume mount '\/mnt\/a'/],
    ];
    for (const [mounts, expected] of cases) {
      assert.match(
        await failure(Sandbox.create("base", { volumeMounts: mounts })),
        expected,
        JSON.stringify(mounts),
      );
    }
    // One path twice cannot be said in the SDK's map; the API says it for the raw request.
    const twice = await fetch(`${moat.env.E2B_API_URL}/v2/sandboxes`, {
      method: "POST",
      headers: { "x-api-key": moat.env.E2B_API_KEY!, "content-type": "application/json" },
      body: JSON.stringify({
        templateID: "base",
        volumeMounts: [
          { name: "mine", path: "/mnt/a" },
          { name: "theirs", path: "/mnt/a" },
        ],
      }),
    });
    assert.equal(twice.status, 400);
    assert.match(
      ((await twice.json()) as { message: string }).message,
      /two volumes are mounted at '\/mnt\/a'/,
    );
    assert.equal((await Sandbox.list().nextItems()).length, before, "no sandbox was made for a bad mount");

    // Their token does not open my volume, nor mine theirs; their API key sees none of mine.
    const stolen = new Volume(mine.volumeId, mine.name, theirs.token, mine.domain);
    assert.match(await failure(stolen.readFile("/x")), /Unauthorized.*does not open volume/);
    assert.match(await failure(Volume.getInfo(mine.volumeId, other)), /not found/);
    assert.equal(await Volume.destroy(mine.volumeId, other), false);
    assert.equal(await Volume.destroy(theirs.volumeId, other), true);
  });

  test("symlinks planted inside a sandbox never lead the content API to the host's files", async () => {
    const vol = await Volume.create("hostile");
    const sbx = await create({ "/mnt/h": vol });
    // Inside the sandbox these point at its own /etc; on the node, they would point at the host's.
    const planted = await run(
      sbx,
      [
        `ln -s ${canary} /mnt/h/canary-dir`,
        `ln -s ${canary}/secret /mnt/h/canary-file`,
        "ln -s /etc /mnt/h/etc",
        "ln -s / /mnt/h/root",
        "mkdir -p /mnt/h/real && ln -s /etc/passwd /mnt/h/real/passwd",
      ].join(" && "),
      "root",
    );
    assert.equal(planted.exitCode, 0, planted.stderr);

    assert.match(await failure(vol.readFile("/canary-file")), /^400: .*symbolic link/);
    assert.match(await failure(vol.readFile("/canary-dir/secret")), /^400: .*symbolic link/);
    assert.match(await failure(vol.readFile("/etc/shadow")), /^400: /);
    assert.match(await failure(vol.readFile("/real/passwd")), /^400: /);
    assert.match(await failure(vol.readFile("/root/etc/hostname")), /^400: /);
    assert.match(await failure(vol.writeFile("/canary-dir/planted", "pwned")), /^400: /);
    assert.match(await failure(vol.writeFile("/etc/moat-volume-pwned", "pwned")), /^400: /);
    assert.match(await failure(vol.makeDir("/canary-dir/sub/dir", { force: true })), /^400: /);
    assert.match(await failure(vol.list("/canary-dir")), /^400: /);
    assert.match(await failure(vol.updateMetadata("/canary-dir/secret", { mode: 0o777 })), /^400: /);
    assert.match(await failure(vol.updateMetadata("/canary-file", { mode: 0o777 })), /^400: /);
    assert.match(await failure(vol.remove("/canary-dir/secret")), /^400: /);
    assert.match(await failure(vol.readFile("/../../../etc/passwd")), /^400: .*'\.\.'/);
    // The links themselves show as links, with their targets, and go when removed.
    const link = await vol.getInfo("/canary-dir");
    assert.equal(link.type, "symlink");
    assert.equal(link.target, canary);
    assert.deepEqual(
      (await vol.list("/", { depth: 3 })).map((e) => `${e.type} ${e.path}`),
      [
        "symlink /canary-dir",
        "symlink /canary-file",
        "symlink /etc",
        "directory /real",
        "symlink /real/passwd",
        "symlink /root",
      ],
    );
    // Writing over a link's name replaces the link; it writes nothing where it pointed.
    await vol.writeFile("/canary-file", "mine now");
    assert.equal(
      (await run(sbx, "cat /mnt/h/canary-file; test -L /mnt/h/canary-file; echo $?")).stdout,
      "mine now1\n",
    );
    await vol.remove("/canary-dir");
    await vol.remove("/real");

    // The host is as it was.
    assert.deepEqual(await readdir(canary), ["secret"]);
    assert.equal(await readFile(path.join(canary, "secret"), "utf8"), "host secret\n");
    assert.equal((await stat(path.join(canary, "secret"))).mode & 0o777, 0o644);
    await assert.rejects(stat("/etc/moat-volume-pwned"));
    await sbx.kill();
  });

  test("after a crash of moat, the adopted sandbox and the content routes still share the volume", async () => {
    const vol = await Volume.create("crash-proof");
    const sbx = await create({ "/mnt/c": vol });
    assert.equal((await run(sbx, "echo before > /mnt/c/f")).exitCode, 0);
    await moat.restart({ signal: "SIGKILL" });
    useMoat(moat);
    assert.equal(await vol.readFile("/f"), "before\n");
    await vol.writeFile("/g", "after the restart");
    assert.equal((await run(sbx, "cat /mnt/c/g && echo again >> /mnt/c/f")).stdout, "after the restart");
    assert.equal(await vol.readFile("/f"), "before\nagain\n");
    await sbx.kill();
    assert.equal(await Volume.destroy(vol.volumeId), true);
  });

  test("a volume holds its size and no more: ENOSPC inside, 507 through the API, nothing half-written", async () => {
    const vol = await Volume.create("small");
    const sbx = await create({ "/mnt/small": vol });
    const fill = await run(sbx, `dd if=/dev/zero of=/mnt/small/fill bs=1M count=${VOLUME_MB * 2} 2>&1`);
    assert.notEqual(fill.exitCode, 0);
    assert.match(fill.stdout, /No space left on device/);
    const big = randomBytes(VOLUME_MB * MIB);
    assert.match(await failure(vol.writeFile("/too-big", big)), /^507: the volume is full/);
    assert.equal(await vol.exists("/too-big"), false);
    assert.deepEqual(
      (await vol.list("/")).map((e) => e.name),
      ["fill"],
      "no temporary file is left of the failed write",
    );
    // The host gave it no more than its size.
    const image = path.join(moat.dataDir, "volumes");
    let allocated = 0;
    for (const team of await readdir(image)) {
      for (const id of await readdir(path.join(image, team))) {
        const s = await stat(path.join(image, team, id, "volume.img")).catch(() => undefined);
        if (id === vol.volumeId && s) allocated = s.blocks * 512;
      }
    }
    assert.ok(
      allocated > 0 && allocated <= (VOLUME_MB + 1) * MIB,
      `image takes ${allocated} bytes of the host`,
    );
    await sbx.kill();
    await vol.remove("/fill");
    await vol.writeFile("/fits", randomBytes(MIB));
    assert.equal((await vol.getInfo("/fits")).size, MIB);
  });
});
