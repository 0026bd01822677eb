/**
 * The signed URLs of template files: what the SDK's bare PUT and a node's bare GET may do, where
 * uploads land on disk, the upload cap, and the signing key shared through the database.
 */
import assert from "node:assert/strict";
import { createHmac } from "node:crypto";
import { mkdtemp, readdir, readFile, rm, stat } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import { createNoopLogger } from "@moat/shared";
import { openAPI } from "../src/index.js";
import { TemplateFileStore } from "../src/template/file-store.js";
import { removeUnusedFiles } from "../src/template/files.js";
import { FakeOrchestrator } from "./fakes/fake-orchestrator.js";
import { backends, POSTGRES_OFF } from "./helpers.js";
import {
  expectError,
  requestBuild,
  sha256,
  startBuild,
  startTemplateTestAPI,
  type TemplateTestAPI,
  uploadFiles,
  waitForBuild,
} from "./template-helpers.js";

for (const backend of backends) {
  describe(`template files (${backend.name})`, () => {
    let t: TemplateTestAPI;
    let templateID: string;
    before(async () => {
      t = await startTemplateTestAPI(backend, { maxUploadBytes: 4 * 1024 * 1024 });
      templateID = (await requestBuild(t, { name: "files" })).templateID;
    });
    after(() => t.close());

    const link = async (hash: string, key?: string) => {
      const res = await t.request(`/templates/${templateID}/files/${hash}`, { key });
      return {
        status: res.status,
        body: (await res.json()) as { present: boolean; url?: string; headers?: Record<string, string> },
      };
    };

    test("an upload streams to <dataDir>/template-files/<team>/<hash>; then the hash is present", async () => {
      // Larger than the 1 MiB JSON body limit: uploads are exempt from it.
      const content = Buffer.alloc(3 * 1024 * 1024, "x");
      const hash = sha256(content);
      const { status, body } = await link(hash);
      assert.equal(status, 201);
      assert.equal(body.present, false);
      assert.deepEqual(body.headers, { "Content-Type": "application/octet-stream" });
      const url = new URL(body.url!);
      assert.equal(url.origin, "http://127.0.0.1:3000", "the public URL defaults to where the API listens");
      assert.equal(url.pathname, `/template-files/${t.teamID}/${hash}`);
      assert.deepEqual([...url.searchParams.keys()], ["expires", "signature"]);
      const expires = Number(url.searchParams.get("expires")) * 1000 - Date.now();
      assert.ok(
        expires > 3_500_000 && expires <= 3_600_000,
        `an hour to start the upload, got ${expires} ms`,
      );

      const put = await t.requestURL(body.url!, { method: "PUT", body: content, headers: body.headers });
      assert.equal(put.status, 200);
      const dir = path.join(t.dataDir, "template-files", t.teamID);
      assert.deepEqual(await readdir(dir), [hash], "no temporary file is left");
      assert.ok((await readFile(path.join(dir, hash))).equals(content));
      assert.deepEqual((await link(hash)).body, { present: true });

      const other = await t.newTeam("other");
      const otherTemplate = await requestBuild(t, { name: "theirs" }, other.apiKey);
      const theirs = await t.request(`/templates/${otherTemplate.templateID}/files/${hash}`, {
        key: other.apiKey,
      });
      assert.equal(((await theirs.json()) as { present: boolean }).present, false, "files belong to a team");
      assert.equal((await link(hash, other.apiKey)).status, 404, "another team's template");
    });

    test("a bad, missing, expired or misused signature is a 403 JSON error", async () => {
      const content = "some files";
      const hash = sha256(content);
      const url = new URL((await link(hash)).body.url!);
      const put = (u: URL | string, init: RequestInit = {}) =>
        t.requestURL(u.toString(), { method: "PUT", body: content, ...init });

      const wrong = new URL(url);
      const signed = url.searchParams.get("signature")!;
      // Another first character, always: a fixed "A" left one signature in 64 unchanged.
      wrong.searchParams.set("signature", `${signed[0] === "A" ? "B" : "A"}${signed.slice(1)}`);
      await expectError(await put(wrong), 403, /signature is invalid or expired/);
      const bare = new URL(url);
      bare.search = "";
      await expectError(await put(bare), 403);
      const later = new URL(url);
      later.searchParams.set("expires", String(Number(url.searchParams.get("expires")) + 3600));
      await expectError(await put(later), 403, undefined);
      const otherHash = new URL(url);
      otherHash.pathname = `/template-files/${t.teamID}/${sha256("other")}`;
      await expectError(await put(otherHash), 403);
      const otherTeam = new URL(url);
      otherTeam.pathname = `/template-files/00000000-0000-4000-8000-000000000000/${hash}`;
      await expectError(await put(otherTeam), 403);
      await expectError(await t.requestURL(url.toString()), 403, /download URL/);

      // A URL signed with the right key that expired.
      const { key } = await t.api.db
        .selectFrom("signing_keys")
        .select("key")
        .where("name", "=", "template-files")
        .executeTakeFirstOrThrow();
      const expires = String(Math.floor(Date.now() / 1000) - 1);
      const signature = createHmac("sha256", Buffer.from(key, "hex"))
        .update(`moat-template-file\nPUT\n${t.teamID}\n${hash}\n${expires}`)
        .digest("base64url");
      const expired = new URL(url);
      expired.search = new URLSearchParams({ expires, signature }).toString();
      await expectError(await put(expired), 403);
      const fresh = new URL(url);
      fresh.search = new URLSearchParams({
        expires: String(Number(expires) + 60),
        signature: createHmac("sha256", Buffer.from(key, "hex"))
          .update(`moat-template-file\nPUT\n${t.teamID}\n${hash}\n${Number(expires) + 60}`)
          .digest("base64url"),
      }).toString();
      assert.equal((await put(fresh)).status, 200, "the scheme as documented");
      assert.equal((await link(hash)).body.present, true);
    });

    test("uploads past maxUploadBytes are a 413, declared or streamed, and leave nothing", async () => {
      const big = Buffer.alloc(4 * 1024 * 1024 + 1, "y");
      const hash = sha256(big);
      const { url } = (await link(hash)).body;
      await expectError(
        await t.requestURL(url!, { method: "PUT", body: big }),
        413,
        /larger than 4194304 bytes/,
      );
      const stream = new ReadableStream<Uint8Array>({
        start(controller) {
          for (let i = 0; i < 5; i++) controller.enqueue(new Uint8Array(1024 * 1024));
          controller.close();
        },
      });
      const streamed = await t.requestURL(url!, {
        method: "PUT",
        body: stream,
        duplex: "half",
      } as RequestInit);
      await expectError(streamed, 413);
      assert.equal((await link(hash)).body.present, false);
      const dir = path.join(t.dataDir, "template-files", t.teamID);
      assert.ok(!(await readdir(dir)).includes(hash));
      assert.ok(!(await readdir(dir)).some((f) => f.endsWith(".tmp")), "no temporary file is left");
    });

    test("the download URL a node gets serves the file; it cannot upload", async () => {
      const content = "downloaded by the node";
      const hash = sha256(content);
      const { url } = (await link(hash)).body;
      assert.equal((await t.requestURL(url!, { method: "PUT", body: content })).status, 200);
      const requested = await requestBuild(t, { name: "files" });
      const start = await t.request(`/v2/templates/${requested.templateID}/builds/${requested.buildID}`, {
        method: "POST",
        json: { fromImage: "e2bdev/base", steps: [{ type: "COPY", args: ["f", "/f"], filesHash: hash }] },
      });
      assert.equal(start.status, 202);
      assert.equal((await waitForBuild(t, requested)).status, "ready");
      const filesURL = t.fake.templates.requests.at(-1)!.steps[0]!.filesUrl;
      const expires = Number(new URL(filesURL).searchParams.get("expires")) * 1000 - Date.now();
      assert.ok(expires > 6 * 3_500_000, `hours for the node to reach the step, got ${expires} ms`);
      const got = await t.requestURL(filesURL);
      assert.equal(got.status, 200);
      assert.equal(got.headers.get("content-length"), String(content.length));
      assert.equal(await got.text(), content);
      await expectError(await t.requestURL(filesURL, { method: "PUT", body: "overwrite" }), 403);
    });

    test("a build is cached by what the API received, never by the hash the client claimed", async () => {
      // The claim names the file in its team; the node gets the SHA-256 of the bytes, and the team.
      const claimed = sha256("what the client says it uploads");
      const content = Buffer.from("what it really uploads");
      const { url } = (await link(claimed)).body;
      assert.equal((await t.requestURL(url!, { method: "PUT", body: content })).status, 200);
      const requested = await requestBuild(t, { name: "keyed-by-content" });
      const res = await startBuild(t, requested, {
        fromImage: "e2bdev/base",
        steps: [{ type: "COPY", args: ["f", "/f"], filesHash: claimed }],
      });
      assert.equal(res.status, 202, await res.text());
      assert.equal((await waitForBuild(t, requested)).status, "ready");
      const request = t.fake.templates.requests.at(-1)!;
      assert.equal(request.teamId, t.teamID, "the node knows whose build it is");
      assert.equal(request.steps[0]!.filesHash, sha256(content));
      assert.deepEqual(t.fake.templates.downloads.get(sha256(content)), content);
      const stored = await t.api.db
        .selectFrom("template_files")
        .select(["content_sha256", "size"])
        .where("team_id", "=", t.teamID)
        .where("hash", "=", claimed)
        .executeTakeFirstOrThrow();
      assert.deepEqual(stored, { content_sha256: sha256(content), size: stored.size });
      // What the build records as asked for is the client's claim, as the SDK sent it.
      const build = await t.api.db
        .selectFrom("template_builds")
        .select("start_request")
        .where("build_id", "=", requested.buildID)
        .executeTakeFirstOrThrow();
      assert.equal(build.start_request?.steps[0]?.filesHash, claimed);
    });

    test("one team's files uploaded under another team's hash reach only its own builds", async () => {
      const victim = await t.newTeam("victim");
      const attacker = await t.newTeam("attacker");
      const as = (key: string) => ({
        ...t,
        request: (p: string, i: RequestInit & { json?: unknown } = {}) => t.request(p, { ...i, key }),
      });
      const real = Buffer.from("the victim's config");
      const crafted = Buffer.from("the attacker's planted files");
      const hash = sha256(real);
      const upload = async (key: string, template: string, body: Buffer) => {
        const res = await t.request(`/templates/${template}/files/${hash}`, { key });
        const linkBody = (await res.json()) as { present: boolean; url: string };
        assert.equal(linkBody.present, false, "another team's upload is not present for this one");
        assert.equal((await t.requestURL(linkBody.url, { method: "PUT", body })).status, 200);
      };
      const steps = [{ type: "COPY", args: ["app", "/home/user/app"], filesHash: hash }];
      const attackers = await requestBuild(as(attacker.apiKey), { name: "app" });
      await upload(attacker.apiKey, attackers.templateID, crafted);
      assert.equal(
        (await startBuild(as(attacker.apiKey), attackers, { fromImage: "e2bdev/base", steps })).status,
        202,
      );
      assert.equal((await waitForBuild(as(attacker.apiKey), attackers)).status, "ready");
      const attackRequest = t.fake.templates.requests.at(-1)!;

      const victims = await requestBuild(as(victim.apiKey), { name: "app" });
      await upload(victim.apiKey, victims.templateID, real);
      assert.equal(
        (await startBuild(as(victim.apiKey), victims, { fromImage: "e2bdev/base", steps })).status,
        202,
      );
      assert.equal((await waitForBuild(as(victim.apiKey), victims)).status, "ready");
      const victimRequest = t.fake.templates.requests.at(-1)!;

      assert.equal(attackRequest.teamId, attacker.teamID);
      assert.equal(victimRequest.teamId, victim.teamID);
      assert.equal(attackRequest.steps[0]!.filesHash, sha256(crafted));
      assert.equal(victimRequest.steps[0]!.filesHash, hash);
      assert.deepEqual(
        t.fake.templates.downloads.get(hash),
        real,
        "the victim's node got the victim's bytes",
      );
      assert.deepEqual(t.fake.templates.downloads.get(sha256(crafted)), crafted);
    });

    test("files recorded before the API hashed uploads read as not uploaded: the SDK uploads them again", async () => {
      const content = "uploaded by an older moat";
      const { hash } = await uploadFiles(t, templateID, content);
      await t.api.db
        .updateTable("template_files")
        .set({ content_sha256: null })
        .where("team_id", "=", t.teamID)
        .where("hash", "=", hash)
        .execute();
      assert.equal((await link(hash)).body.present, false);
      const requested = await requestBuild(t, { name: "older" });
      await expectError(
        await startBuild(t, requested, {
          fromImage: "e2bdev/base",
          steps: [{ type: "COPY", args: ["f", "/f"], filesHash: hash }],
        }),
        400,
        /were not uploaded/,
      );
      assert.equal((await uploadFiles(t, templateID, content)).uploaded, true);
      assert.equal((await link(hash)).body.present, true);
    });

    test("files no build used for a week are removed; the SDK is asked to upload them again", async () => {
      const store = new TemplateFileStore(t.dataDir, t.api.config.maxUploadBytes);
      const sweep = () =>
        removeUnusedFiles({ db: t.api.db, templateFiles: store, logger: createNoopLogger() });
      const [stale, checked, copied] = ["stale", "checked before an upload", "copied by a build"];
      const files = new Map<string, string>();
      for (const content of [stale, checked, copied])
        files.set(content, (await uploadFiles(t, templateID, content)).hash);
      const onDisk = (content: string) =>
        stat(path.join(t.dataDir, "template-files", t.teamID, files.get(content)!)).then(
          () => true,
          () => false,
        );
      assert.equal(await sweep(), 0, "fresh uploads stay");

      // Eight days pass with no use.
      const eightDaysAgo = new Date(Date.now() - 8 * 24 * 3600_000);
      await t.api.db
        .updateTable("template_files")
        .set({ created_at: eightDaysAgo, last_used_at: eightDaysAgo })
        .where("team_id", "=", t.teamID)
        .where("hash", "in", [...files.values()])
        .execute();
      // The SDK's check before a build, and a build's start, are uses.
      assert.deepEqual((await link(files.get(checked)!)).body, { present: true });
      const requested = await requestBuild(t, { name: "files" });
      const start = await t.request(`/v2/templates/${requested.templateID}/builds/${requested.buildID}`, {
        method: "POST",
        json: {
          fromImage: "e2bdev/base",
          steps: [{ type: "COPY", args: ["f", "/f"], filesHash: files.get(copied) }],
        },
      });
      assert.equal(start.status, 202);
      await waitForBuild(t, requested);

      assert.ok((await sweep()) >= 1);
      assert.equal(await onDisk(stale), false, "the unused file is gone from disk");
      assert.equal(await onDisk(checked), true);
      assert.equal(await onDisk(copied), true);
      const again = await link(files.get(stale)!);
      assert.equal(again.body.present, false, "the SDK uploads it again");
      assert.ok(again.body.url);
      assert.equal(await sweep(), 0);
    });
  });
}

const postgres = backends.find((b) => b.name === "postgres");
describe("the signing key is shared by API processes on one database", {
  skip: postgres ? false : POSTGRES_OFF,
}, () => {
  test("a URL one process signed is good at another", async () => {
    const database = await postgres!.database();
    const dataDir = await mkdtemp(path.join(tmpdir(), "moat-api-shared-"));
    const fake = new FakeOrchestrator();
    const open = () =>
      openAPI({
        dataDir,
        databaseURL: database.url,
        orchestrators: [{ id: "node-1", transport: fake.transport() }],
        logger: createNoopLogger(),
        publicURL: "https://api.example.com/",
        watchNodes: false,
      });
    const [a, b] = await Promise.all([open(), open()]);
    try {
      const { apiKey } = await a.bootstrap();
      const headers = { "X-API-Key": apiKey!, "Content-Type": "application/json" };
      const res = await a.app.request("/v3/templates", {
        method: "POST",
        headers,
        body: '{"name":"shared"}',
      });
      const { templateID } = (await res.json()) as { templateID: string };
      const hash = sha256("x");
      const linkRes = await a.app.request(`/templates/${templateID}/files/${hash}`, { headers });
      const url = new URL(((await linkRes.json()) as { url: string }).url);
      assert.equal(url.origin, "https://api.example.com", "publicURL, trailing slash dropped");
      const atB = await b.app.request(url.pathname + url.search, { method: "PUT", body: "x" });
      assert.equal(atB.status, 200, "signed by one process, accepted by the other");
      const again = await a.app.request(`/templates/${templateID}/files/${hash}`, { headers });
      assert.deepEqual(await again.json(), { present: true });
      assert.equal((await b.db.selectFrom("signing_keys").selectAll().execute()).length, 1);
    } finally {
      await a.close();
      await b.close();
      fake.close();
      await database.drop();
      await rm(dataDir, { recursive: true, force: true });
    }
  });
});
