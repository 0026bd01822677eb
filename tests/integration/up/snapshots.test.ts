/**
 * Named snapshots end to end: the unmodified e2b SDK against `moat up`. A snapshot keeps a
 * sandbox's memory and files; many sandboxes start from it (by id or by name), each its own; it
 * is listed per team, outlives its source and a restart of moat, and is gone when deleted. Bad
 * requests get clear errors, another team reaches none of it, and nothing stays on the host.
 */
import assert from "node:assert/strict";
import { readdir, stat } from "node:fs/promises";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import { Sandbox, SandboxError, SandboxNotFoundError } from "e2b";
import { COUNTER_SERVER } from "../helpers/counter.js";
import { assertNothingOutlives, moatCgroups } from "../helpers/host-state.js";
import { getByHost, type RunningMoat, startMoat, useMoat } from "../helpers/moat-up.js";

type Counter = { pid: number; count: number };

describe("moat up: snapshots", { timeout: 600_000 }, () => {
  let moat: RunningMoat;
  let foreignCgroups: string[] = [];
  let source: Sandbox;
  let atSnapshot: Counter;
  let named: { snapshotId: string; names: string[] };
  let unnamed: { snapshotId: string; names: string[] };
  let outsider: { apiKey: string };

  async function askCounter(sandboxID: string): Promise<Counter> {
    const res = await getByHost(moat, sandboxID, 7000, "/");
    assert.equal(res.status, 200, res.body);
    return JSON.parse(res.body) as Counter;
  }

  const snapshotDirs = async () => (await readdir(path.join(moat.dataDir, "snapshots"))).sort();

  before(async () => {
    foreignCgroups = await moatCgroups();
    moat = await startMoat({ env: { MOAT_NETWORK_POOL_SIZE: "0" } });
    useMoat(moat);
    const res = await fetch(`${moat.env.E2B_API_URL}/admin/teams`, {
      method: "POST",
      headers: { "x-admin-token": moat.env.MOAT_ADMIN_TOKEN!, "content-type": "application/json" },
      body: JSON.stringify({ name: "snapshot-outsider" }),
    });
    outsider = (await res.json()) as { apiKey: string };
    source = await Sandbox.create("base", { timeoutMs: 600_000, envs: { FROM_SOURCE: "yes" } });
    await source.files.write("/home/user/counter.py", COUNTER_SERVER);
    await source.commands.run("python3 /home/user/counter.py", { background: true, timeoutMs: 0 });
    await source.files.makeDir("/home/user/app");
    await source.files.write("/home/user/app/data.txt", "important data");
    for (let i = 0; i < 100; i++) {
      const counter = await askCounter(source.sandboxId).catch(() => undefined);
      if (counter) {
        atSnapshot = counter;
        break;
      }
      await new Promise((r) => setTimeout(r, 100));
    }
    assert.ok(atSnapshot, "the counter server answers");
  });

  after(async () => {
    if (!moat) return;
    const dataDir = moat.dataDir;
    await moat.cleanup();
    await assertNothingOutlives(dataDir, foreignCgroups);
  });

  test("a snapshot, named and not: the source runs on; the files on the node are root's alone", async () => {
    named = await source.createSnapshot({ name: "my-snapshot" });
    assert.equal(named.snapshotId, "default/my-snapshot:default");
    assert.deepEqual(named.names, ["default/my-snapshot"]);
    unnamed = await source.createSnapshot();
    assert.match(unnamed.snapshotId, /^[a-z0-9]{20}:default$/);
    assert.deepEqual(unnamed.names, []);
    // The source carries on from where it was.
    assert.deepEqual(await askCounter(source.sandboxId), {
      pid: atSnapshot.pid,
      count: atSnapshot.count + 1,
    });
    assert.equal(await source.files.read("/home/user/app/data.txt"), "important data");
    const dirs = await snapshotDirs();
    assert.equal(dirs.length, 2);
    for (const dir of dirs) {
      const full = path.join(moat.dataDir, "snapshots", dir);
      assert.equal((await stat(full)).mode & 0o777, 0o700);
      for (const file of ["snapshot.json", "disk.img"]) {
        assert.equal((await stat(path.join(full, file))).mode & 0o777, 0o600, file);
      }
      for (const file of await readdir(path.join(full, "memory"))) {
        assert.equal((await stat(path.join(full, "memory", file))).mode & 0o777, 0o600, file);
      }
    }
  });

  test("listed per team, filtered by sandbox and by name", async () => {
    const all = await Sandbox.listSnapshots().nextItems();
    assert.deepEqual(
      all.map((s) => s.snapshotId),
      [unnamed.snapshotId, named.snapshotId],
    );
    assert.deepEqual(
      (await source.listSnapshots().nextItems()).map((s) => s.snapshotId).sort(),
      [named.snapshotId, unnamed.snapshotId].sort(),
    );
    assert.deepEqual(await Sandbox.listSnapshots({ name: "my-snapshot" }).nextItems(), [named]);
    assert.deepEqual(await Sandbox.listSnapshots({ name: "my-snapshot-does-not-exist" }).nextItems(), []);
    const paged = Sandbox.listSnapshots({ limit: 1 });
    assert.equal((await paged.nextItems()).length, 1);
    assert.equal(paged.hasNext, true);
    assert.equal((await paged.nextItems()).length, 1);
    assert.equal(paged.hasNext, false);
    assert.deepEqual(await Sandbox.listSnapshots({ apiKey: outsider.apiKey }).nextItems(), []);
  });

  test("sandboxes from a snapshot, by id and by name: its memory and files, each its own", async () => {
    const [a, b] = await Promise.all([Sandbox.create(named.snapshotId), Sandbox.create(unnamed.snapshotId)]);
    for (const sbx of [a!, b!]) {
      // The counter process as it was at the snapshot, in each.
      assert.deepEqual(await askCounter(sbx.sandboxId), { pid: atSnapshot.pid, count: atSnapshot.count + 1 });
      assert.equal(await sbx.files.read("/home/user/app/data.txt"), "important data");
      const out = await sbx.commands.run('hostname; echo "$FROM_SOURCE $E2B_SANDBOX_ID"');
      assert.equal(out.stdout, `${sbx.sandboxId}\nyes ${sbx.sandboxId}\n`);
    }
    await a!.files.write("/home/user/app/data.txt", "changed in a");
    assert.equal(await b!.files.read("/home/user/app/data.txt"), "important data");
    assert.equal(await source.files.read("/home/user/app/data.txt"), "important data");
    // The plain name reaches it too, and a fork of a sandbox from a snapshot works.
    const c = await Sandbox.create("my-snapshot");
    const [forked] = await c.fork();
    assert.ok(forked instanceof Sandbox, String(forked));
    assert.equal(await forked.files.read("/home/user/app/data.txt"), "important data");
    await Promise.all([a!.kill(), b!.kill(), c.kill(), forked.kill()]);
  });

  test("a snapshot outlives its source and a restart of moat", async () => {
    await source.kill();
    await moat.restart();
    useMoat(moat);
    assert.deepEqual(
      (await Sandbox.listSnapshots().nextItems()).map((s) => s.snapshotId),
      [unnamed.snapshotId, named.snapshotId],
    );
    const again = await Sandbox.create(named.snapshotId);
    assert.deepEqual(await askCounter(again.sandboxId), { pid: atSnapshot.pid, count: atSnapshot.count + 1 });
    await again.kill();
  });

  test("bad requests: clear errors, and another team reaches nothing", async () => {
    const sbx = await Sandbox.create("base");
    const api = (route: string, init: { method?: string; json?: unknown; key?: string } = {}) =>
      fetch(`${moat.env.E2B_API_URL}${route}`, {
        method: init.method ?? "POST",
        headers: { "x-api-key": init.key ?? moat.env.E2B_API_KEY!, "content-type": "application/json" },
        ...(init.json !== undefined ? { body: JSON.stringify(init.json) } : {}),
      });
    const expectError = async (res: Response, status: number, pattern: RegExp) => {
      const body = (await res.json()) as { code: number; message: string };
      assert.equal(res.status, status, body.message);
      assert.equal(body.code, status);
      assert.match(body.message, pattern);
    };
    // A template's name (a build requested, never started) is not a snapshot's to take.
    const requested = await api("/v3/templates", {
      json: { name: "taken-name", cpuCount: 1, memoryMB: 512 },
    });
    assert.equal(requested.status, 202, await requested.clone().text());
    await expectError(
      await api(`/sandboxes/${sbx.sandboxId}/snapshots`, { json: { name: "taken-name" } }),
      409,
      /taken by a template/,
    );
    for (const name of ["Not Valid!", "../up", "base", "someone-else/snap"]) {
      await expectError(await api(`/sandboxes/${sbx.sandboxId}/snapshots`, { json: { name } }), 400, /name/);
    }
    await assert.rejects(Sandbox.createSnapshot("nosuchsandbox0000000"), SandboxNotFoundError);
    await assert.rejects(
      Sandbox.createSnapshot(sbx.sandboxId, { apiKey: outsider.apiKey }),
      SandboxNotFoundError,
      "another team's sandbox",
    );
    for (const reference of [named.snapshotId, "my-snapshot", unnamed.snapshotId]) {
      await assert.rejects(Sandbox.create(reference, { apiKey: outsider.apiKey }), /404/, reference);
      assert.equal(await Sandbox.deleteSnapshot(reference, { apiKey: outsider.apiKey }), false);
    }
    assert.equal(await sbx.pause(), true);
    await assert.rejects(sbx.createSnapshot(), (err: unknown) => {
      assert.ok(err instanceof SandboxError);
      assert.match(err.message, /^409: .*paused: resume it/);
      return true;
    });
    await sbx.kill();
    assert.equal((await api("/templates/taken-name", { method: "DELETE" })).status, 204);
    assert.equal(await Sandbox.deleteSnapshot("nosuchsnapshot"), false);
  });

  test("deleted: gone from the list, from creates and from the node's disk", async () => {
    assert.equal(await Sandbox.deleteSnapshot(named.snapshotId), true);
    assert.equal(await Sandbox.deleteSnapshot(named.snapshotId), false);
    assert.equal(await Sandbox.deleteSnapshot(unnamed.snapshotId), true);
    assert.deepEqual(await Sandbox.listSnapshots().nextItems(), []);
    await assert.rejects(Sandbox.create(named.snapshotId), /404/);
    assert.deepEqual(await snapshotDirs(), []);
  });
});
