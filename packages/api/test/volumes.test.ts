/**
 * Volumes through the API on the fake node: the team's volumes (create, list, get, delete, names,
 * maxVolumes, another team's), the content routes' authorisation (the volume's own token only),
 * and creates with `volumeMounts` (each bad mount a clear 400, the mounts on the node's config and
 * in GET /sandboxes, a volume in use not deleted). The unmodified SDK drives the same over HTTP.
 */
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { createNoopLogger } from "@moat/shared";
import { Sandbox, Volume, VolumeError } from "e2b";
import { type RunningAPI, startAPI } from "../src/index.js";
import { FakeOrchestrator } from "./fakes/fake-orchestrator.js";
import { backends, createSandbox, startTestAPI, type TestAPI } from "./helpers.js";

interface VolumeJSON {
  volumeID: string;
  name: string;
  token: string;
  sizeMB: number;
  domain?: string;
  usedBytes?: number;
}

async function newVolume(t: TestAPI, name: string, key?: string): Promise<VolumeJSON> {
  const res = await t.request("/volumes", { method: "POST", json: { name }, key });
  assert.equal(res.status, 201, await res.clone().text());
  return (await res.json()) as VolumeJSON;
}

async function errorOf(res: Response, status: number): Promise<string> {
  const body = (await res.json()) as { code: number; message: string };
  assert.equal(res.status, status, body.message);
  assert.equal(body.code, status);
  return body.message;
}

for (const backend of backends) {
  describe(`volumes (${backend.name})`, () => {
    let t: TestAPI;
    let other: { teamID: string; apiKey: string };

    before(async () => {
      t = await startTestAPI(backend, { domain: "moat.test", quotas: { maxVolumes: 3, volumeSizeMB: 64 } });
      other = await t.newTeam();
    });
    after(async () => {
      await t?.close();
    });

    test("create, list, get and delete a team's volumes; names and the team's limit are checked", async () => {
      const a = await newVolume(t, "data-1");
      assert.match(a.volumeID, /^[a-z0-9]{20}$/);
      assert.equal(a.name, "data-1");
      assert.equal(a.sizeMB, 64);
      assert.equal(a.domain, "moat.test");
      assert.match(a.token, /^moatvol_/);
      const b = await newVolume(t, "Data_2");
      assert.notEqual(a.token, b.token);

      const listed = (await (await t.request("/volumes")).json()) as Array<Record<string, unknown>>;
      assert.deepEqual(
        listed.map((v) => [v.name, v.volumeID, v.token]),
        [
          ["data-1", a.volumeID, undefined],
          ["Data_2", b.volumeID, undefined],
        ],
      );
      const got = (await (await t.request(`/volumes/${a.volumeID}`)).json()) as VolumeJSON;
      assert.equal(got.token, a.token);
      assert.equal(got.usedBytes, 0);

      assert.match(
        await errorOf(await t.request("/volumes", { method: "POST", json: { name: "data-1" } }), 409),
        /already exists/,
      );
      for (const name of ["", "vol name", "vol.name", "vol/a", "{x}", "x".repeat(65)]) {
        assert.match(
          await errorOf(await t.request("/volumes", { method: "POST", json: { name } }), 400),
          /not valid/,
          name,
        );
      }
      await newVolume(t, "third");
      assert.match(
        await errorOf(await t.request("/volumes", { method: "POST", json: { name: "fourth" } }), 429),
        /maximum number of volumes \(3\)/,
      );

      // Another team sees none of them, and may use the same names.
      assert.equal(await (await t.request(`/volumes/${a.volumeID}`, { key: other.apiKey })).status, 404);
      assert.equal(
        await (await t.request(`/volumes/${a.volumeID}`, { method: "DELETE", key: other.apiKey })).status,
        404,
      );
      assert.deepEqual(await (await t.request("/volumes", { key: other.apiKey })).json(), []);
      await newVolume(t, "data-1", other.apiKey);

      for (const v of [a, b]) {
        assert.equal((await t.request(`/volumes/${v.volumeID}`, { method: "DELETE" })).status, 204);
      }
      assert.equal((await t.request(`/volumes/${a.volumeID}`, { method: "DELETE" })).status, 404);
      assert.equal((await t.request(`/volumes/${a.volumeID}`)).status, 404);
    });

    test("the content routes open with the volume's own token: not another volume's, not an API key", async () => {
      const v = await newVolume(t, "content");
      const w = await newVolume(t, "content", other.apiKey);
      const url = (route: string, path: string) =>
        `/volumecontent/${v.volumeID}/${route}?path=${encodeURIComponent(path)}`;
      const as = (token: string | undefined) => ({
        key: null,
        headers: token ? { authorization: `Bearer ${token}` } : {},
      });

      const put = await t.request(url("file", "/notes.txt"), {
        method: "PUT",
        body: "hello",
        ...as(v.token),
        headers: { authorization: `Bearer ${v.token}`, "content-type": "application/octet-stream" },
      });
      assert.equal(put.status, 201, await put.clone().text());
      assert.equal(((await put.json()) as { path: string }).path, "/notes.txt");
      assert.equal(await (await t.request(url("file", "/notes.txt"), as(v.token))).text(), "hello");

      assert.match(await errorOf(await t.request(url("file", "/notes.txt"), as(undefined)), 401), /Bearer/);
      assert.match(
        await errorOf(await t.request(url("file", "/notes.txt"), as(w.token)), 401),
        /does not open/,
      );
      assert.match(
        await errorOf(await t.request(url("file", "/notes.txt"), as("moatvol_AAAA")), 401),
        /does not open/,
      );
      const withKey = await t.request(url("file", "/notes.txt"), { headers: { "x-api-key": t.apiKey } });
      assert.equal(withKey.status, 401);
      assert.equal(
        (
          await t.request(url("file", "/notes.txt"), {
            key: null,
            headers: { authorization: `Bearer ${t.apiKey}` },
          })
        ).status,
        401,
      );

      const mk = await t.request(`/volumecontent/${v.volumeID}/dir?path=/a/b&force=true&mode=488`, {
        method: "POST",
        ...as(v.token),
      });
      assert.equal(mk.status, 201);
      assert.equal(((await mk.json()) as { mode: number }).mode, 0o750);
      const listed = (await (await t.request(url("dir", "/"), as(v.token))).json()) as Array<{
        path: string;
      }>;
      assert.deepEqual(
        listed.map((e) => e.path),
        ["/a", "/notes.txt"],
      );
      const patched = await t.request(url("path", "/notes.txt"), {
        method: "PATCH",
        ...as(v.token),
        headers: { authorization: `Bearer ${v.token}`, "content-type": "application/json" },
        body: JSON.stringify({ mode: 0o600 }),
      });
      assert.equal(((await patched.json()) as { mode: number }).mode, 0o600);
      assert.equal((await t.request(url("path", "/a"), { method: "DELETE", ...as(v.token) })).status, 204);
      await errorOf(await t.request(url("path", "/a"), as(v.token)), 404);
      await errorOf(await t.request(url("file", "/../etc/passwd"), as(v.token)), 400);

      // A deleted volume's token opens nothing.
      assert.equal((await t.request(`/volumes/${v.volumeID}`, { method: "DELETE" })).status, 204);
      await errorOf(await t.request(url("file", "/notes.txt"), as(v.token)), 404);
    });

    test("volumeMounts at create: resolved in the team, checked, on the node's config and in GET; a volume in use stays", async () => {
      const v = await newVolume(t, "mounted");
      const theirs = await newVolume(t, "theirs", other.apiKey);
      const create = (volumeMounts: unknown) =>
        t.request("/v2/sandboxes", { method: "POST", json: { templateID: "base", volumeMounts } });
      const cases: Array<[unknown, RegExp]> = [
        [[{ name: "nope", path: "/mnt/a" }], /volume 'nope' not found in this team/],
        [[{ name: "theirs", path: "/mnt/a" }], /volume 'theirs' not found in this team/],
        [[{ name: "mounted", path: "mnt/a" }], /not an absolute path/],
        [[{ name: "mounted", path: "/mnt/../etc" }], /not a normalised path/],
        [[{ name: "mounted", path: "/" }], /system directory/],
        [[{ name: "mounted", path: "/proc/x" }], /under \/proc/],
        [[{ name: "mounted", path: "/opt/moat/envd" }], /under \/opt\/moat/],
        [
          [
            { name: "mounted", path: "/mnt/a" },
            { name: "mounted", path: "/mnt/b" },
          ],
          /mounted twice/,
        ],
        [
          [
            { name: "mounted", path: "/mnt/a" },
            { name: "nope", path: "/mnt/a" },
          ],
          /two volumes are mounted at '\/mnt\/a'/,
        ],
      ];
      for (const [mounts, message] of cases) {
        assert.match(await errorOf(await create(mounts), 400), message, JSON.stringify(mounts));
      }
      assert.equal(t.fake.sandboxes.size, 0, "no sandbox was started for a bad mount");
      void theirs;

      const sbx = await createSandbox(t, { volumeMounts: [{ name: "mounted", path: "/mnt/data" }] });
      const config = t.fake.sandboxes.get(sbx.sandboxID)!.config;
      assert.deepEqual(
        config.volumeMounts.map((m) => [m.volumeId, m.name, m.path]),
        [[v.volumeID, "mounted", "/mnt/data"]],
      );
      const detail = (await (await t.request(`/sandboxes/${sbx.sandboxID}`)).json()) as {
        volumeMounts: unknown;
      };
      assert.deepEqual(detail.volumeMounts, [{ name: "mounted", path: "/mnt/data" }]);
      const listed = (await (await t.request("/v2/sandboxes")).json()) as Array<{
        sandboxID: string;
        volumeMounts: unknown;
      }>;
      assert.deepEqual(listed.find((s) => s.sandboxID === sbx.sandboxID)?.volumeMounts, [
        { name: "mounted", path: "/mnt/data" },
      ]);

      const refused = await errorOf(await t.request(`/volumes/${v.volumeID}`, { method: "DELETE" }), 409);
      assert.match(
        refused,
        new RegExp(`mounted by sandbox ${sbx.sandboxID} \\(running or paused\\); kill it`),
      );
      // Paused, it still holds the volume.
      assert.equal((await t.request(`/sandboxes/${sbx.sandboxID}/pause`, { method: "POST" })).status, 204);
      await errorOf(await t.request(`/volumes/${v.volumeID}`, { method: "DELETE" }), 409);
      assert.equal((await t.request(`/sandboxes/${sbx.sandboxID}`, { method: "DELETE" })).status, 204);
      assert.equal((await t.request(`/volumes/${v.volumeID}`, { method: "DELETE" })).status, 204);
      // Its name is free again, and a create naming the deleted volume is refused.
      assert.match(
        await errorOf(await create([{ name: "mounted", path: "/mnt/data" }]), 400),
        /volume 'mounted' not found/,
      );
    });

    test("a node that still has the volume mounted keeps it: 409, and the volume stays usable", async () => {
      const v = await newVolume(t, "node-busy");
      t.fake.volumes.inUse.set(v.volumeID, ["ghost"]);
      try {
        assert.match(
          await errorOf(await t.request(`/volumes/${v.volumeID}`, { method: "DELETE" }), 409),
          /ghost/,
        );
        assert.equal((await t.request(`/volumes/${v.volumeID}`)).status, 200);
      } finally {
        t.fake.volumes.inUse.delete(v.volumeID);
      }
      assert.equal((await t.request(`/volumes/${v.volumeID}`, { method: "DELETE" })).status, 204);
    });
  });
}

describe("volumes with the e2b SDK over HTTP (fake node)", () => {
  const fake = new FakeOrchestrator();
  let api: RunningAPI;
  let opts: { apiKey: string; apiUrl: string };
  const previous = process.env.E2B_VOLUME_API_URL;

  before(async () => {
    api = await startAPI({
      dataDir: "/nonexistent-moat-test",
      databaseURL: "memory://",
      port: 0,
      orchestrators: [{ id: "node-1", transport: fake.transport() }],
      logger: createNoopLogger(),
    });
    const { apiKey } = await api.bootstrap();
    opts = { apiKey: apiKey!, apiUrl: api.url };
    // What `moat up` prints: the SDK sends volume content requests there.
    process.env.E2B_VOLUME_API_URL = api.url;
  });
  after(async () => {
    if (previous === undefined) delete process.env.E2B_VOLUME_API_URL;
    else process.env.E2B_VOLUME_API_URL = previous;
    await api.close();
    fake.close();
  });

  test("Volume: create, connect, list, getInfo, files, destroy; errors as the SDK's classes", async () => {
    const vol = await Volume.create("sdk-vol", opts);
    assert.equal(vol.name, "sdk-vol");
    const connected = await Volume.connect(vol.volumeId, opts);
    assert.equal(connected.token, vol.token);
    assert.deepEqual(
      (await Volume.list(opts)).map((v) => v.name),
      ["sdk-vol"],
    );
    const written = await vol.writeFile("/hello.txt", "hi from the SDK", { mode: 0o640 });
    assert.equal(written.path, "/hello.txt");
    assert.equal(written.mode, 0o640);
    assert.ok(written.mtime instanceof Date);
    assert.equal(await vol.readFile("/hello.txt"), "hi from the SDK");
    assert.deepEqual(
      await vol.readFile("/hello.txt", { format: "bytes" }),
      new TextEncoder().encode("hi from the SDK"),
    );
    assert.equal(
      await new Response(await vol.readFile("/hello.txt", { format: "stream" })).text(),
      "hi from the SDK",
    );
    await vol.makeDir("/a/b", { force: true });
    assert.equal((await vol.getInfo("/a/b")).type, "directory");
    assert.equal(await vol.exists("/nope"), false);
    assert.deepEqual(
      (await vol.list("/")).map((e) => e.name),
      ["a", "hello.txt"],
    );
    await vol.remove("/a");
    assert.equal(await vol.exists("/a"), false);
    await assert.rejects(vol.readFile("/missing"), (err: Error) => err.name === "VolumePathNotFoundError");

    await assert.rejects(
      Volume.create("sdk-vol", opts),
      (err: Error) => err instanceof VolumeError && /409/.test(err.message),
    );
    await assert.rejects(
      Volume.getInfo("nosuchvolume", opts),
      (err: Error) => err.name === "VolumeNotFoundError",
    );
    assert.equal(await Volume.destroy("nosuchvolume", opts), false);

    const sbx = await Sandbox.create("base", { ...opts, volumeMounts: { "/mnt/vol": vol } });
    const info = await Sandbox.getInfo(sbx.sandboxId, opts);
    assert.deepEqual(info.volumeMounts, [{ name: "sdk-vol", path: "/mnt/vol" }]);
    await assert.rejects(Volume.destroy(vol.volumeId, opts), (err: Error) =>
      /409: volume 'sdk-vol' is mounted/.test(err.message),
    );
    await Sandbox.kill(sbx.sandboxId, opts);
    assert.equal(await Volume.destroy(vol.volumeId, opts), true);
  });
});
