/**
 * Gaps the SDK's own suite found, end to end with the unmodified e2b SDK against `moat up`:
 * signed file URLs on the shared sandbox address (E2B_SANDBOX_URL), and never across sandboxes;
 * requests in the middle of an auto-pause (setTimeout(0) with onTimeout: pause); and `mcp` at
 * create, refused as a gateway that cannot start, with nothing left behind.
 */
import assert from "node:assert/strict";
import http from "node:http";
import { after, before, describe, test } from "node:test";
import { Sandbox, SandboxError } from "e2b";
import { nodeClient } from "../helpers/host-state.js";
import { type RunningMoat, startMoat, useMoat } from "../helpers/moat-up.js";

describe("moat up: the SDK suite's gaps", { timeout: 300_000 }, () => {
  let moat: RunningMoat;

  before(async () => {
    moat = await startMoat();
    useMoat(moat);
  });

  after(async () => {
    await moat?.cleanup();
  });

  describe("signed file URLs through the client proxy", () => {
    let a: Sandbox;
    let b: Sandbox;
    const secretA = "/home/user/a-secret.txt";
    const secretB = "/home/user/b-secret.txt";

    before(async () => {
      [a, b] = await Promise.all([Sandbox.create("base"), Sandbox.create("base")]);
      await a.files.write(secretA, "A's content");
      await b.files.write(secretB, "B's content");
    });

    after(async () => {
      await Promise.all([a?.kill(), b?.kill()]);
    });

    /** The same URL with one query parameter changed. */
    const withParam = (url: string, name: string, value: string) => {
      const changed = new URL(url);
      changed.searchParams.set(name, value);
      return changed.href;
    };

    const upload = (url: string, content: string, init: RequestInit = {}) => {
      const form = new FormData();
      form.append("file", new Blob([content]), "upload.txt");
      return fetch(url, { method: "POST", body: form, ...init });
    };

    test("downloadUrl and uploadUrl of a secured sandbox work with a plain fetch on E2B_SANDBOX_URL", async () => {
      const download = await a.downloadUrl(secretA);
      assert.ok(download.startsWith(`${moat.env.E2B_SANDBOX_URL}/files?`), download);
      const read = await fetch(download);
      assert.equal(read.status, 200);
      assert.equal(await read.text(), "A's content");

      const expiring = await a.downloadUrl(secretA, { useSignatureExpiration: 60 });
      assert.equal((await fetch(expiring)).status, 200);
      const asRoot = await a.downloadUrl(secretA, { user: "root" });
      assert.equal(await (await fetch(asRoot)).text(), "A's content");

      const target = "/home/user/uploaded.txt";
      const written = await upload(await a.uploadUrl(target, { useSignatureExpiration: 60 }), "sent by URL");
      assert.equal(written.status, 200, await written.clone().text());
      assert.equal(await a.files.read(target), "sent by URL");
      const info = await a.files.getInfo(target);
      assert.equal(info.owner, "user", "a URL signed for the default user writes as that user");
    });

    test("expired, tampered and unsigned URLs are 401", async () => {
      const good = await a.downloadUrl(secretA);
      const refused: [string, string][] = [
        ["expired", await a.downloadUrl(secretA, { useSignatureExpiration: -10 })],
        ["path changed", withParam(good, "path", "/home/user/.bashrc")],
        ["user changed", withParam(good, "username", "root")],
        [
          "signature changed",
          withParam(good, "signature", `${new URL(good).searchParams.get("signature")}x`),
        ],
        ["unsigned", `${moat.env.E2B_SANDBOX_URL}/files?path=${encodeURIComponent(secretA)}`],
        ["read signature used to write", good],
      ];
      for (const [what, url] of refused) {
        const res = what.endsWith("to write") ? await upload(url, "overwritten") : await fetch(url);
        const body = (await res.json()) as { code: number; message: string };
        assert.equal(res.status, 401, `${what}: ${JSON.stringify(body)}`);
        assert.equal(body.code, 401);
      }
      assert.equal(await a.files.read(secretA), "A's content");
    });

    test("no URL of sandbox A reaches sandbox B", async () => {
      const download = await a.downloadUrl(secretB);
      const uploadToB = await a.uploadUrl(secretB);
      const domain = moat.env.E2B_DOMAIN;
      const attempts: [string, Promise<Response>][] = [
        // A's signature over B's path: it matches A's token, so it can only ever go to A.
        ["A's URL for B's path", fetch(download)],
        ["A's URL with B's routing headers", fetch(download, { headers: routeTo(b.sandboxId) })],
        ["A's URL with B's host", sendWithHost(download, `49983-${b.sandboxId}.${domain}`)],
        ["A's upload URL with B's headers", upload(uploadToB, "from A", { headers: routeTo(b.sandboxId) })],
        ["A's upload URL with B's host", sendWithHost(uploadToB, `49983-${b.sandboxId}.${domain}`, "from A")],
      ];
      for (const [what, pending] of attempts) {
        const res = await pending;
        const text = await res.text();
        assert.doesNotMatch(text, /B's content/, what);
        // A's own envd has no such file (404) or B's envd refuses A's signature (401).
        assert.ok(res.status === 401 || res.status === 404, `${what}: ${res.status} ${text}`);
      }
      assert.equal(await b.files.read(secretB), "B's content", "B's file is untouched");
    });
  });

  describe("mcp at create", () => {
    test("is refused as a gateway that cannot start (SandboxError), and leaves no sandbox", async () => {
      const node = nodeClient(moat.orchestratorPort, moat.nodeToken);
      const before = (await Sandbox.list().nextItems()).map((s) => s.sandboxId).sort();
      const nodeBefore = (await node.list({})).sandboxes.length;
      for (const opts of [{ mcp: { exa: { apiKey: "x" } } }, { template: "base", mcp: {} }] as const) {
        await assert.rejects(
          Sandbox.create(opts as Parameters<typeof Sandbox.create>[0]),
          (err: unknown) =>
            err instanceof SandboxError &&
            /^400: Failed to start MCP gateway: .*without mcp/.test(err.message),
        );
      }
      assert.deepEqual((await Sandbox.list().nextItems()).map((s) => s.sandboxId).sort(), before);
      assert.equal((await node.list({})).sandboxes.length, nodeBefore);
    });
  });
});

/**
 * A GET (or, with `content`, a multipart upload) of `url` sent to the proxy with another Host
 * header, as a client on a sandbox host name would send it (fetch does not let Host be set).
 */
async function sendWithHost(url: string, host: string, content?: string): Promise<Response> {
  let body: Buffer | undefined;
  const headers: Record<string, string> = { host };
  if (content !== undefined) {
    const form = new FormData();
    form.append("file", new Blob([content]), "upload.txt");
    const encoded = new Request(url, { method: "POST", body: form });
    body = Buffer.from(await encoded.arrayBuffer());
    headers["content-type"] = encoded.headers.get("content-type") ?? "";
  }
  const target = new URL(url);
  return new Promise((resolve, reject) => {
    const req = http.request(
      {
        host: target.hostname,
        port: target.port,
        path: `${target.pathname}${target.search}`,
        method: body ? "POST" : "GET",
        headers,
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on("data", (c: Buffer) => chunks.push(c));
        res.on("end", () => resolve(new Response(Buffer.concat(chunks), { status: res.statusCode })));
      },
    );
    req.once("error", reject);
    req.end(body);
  });
}

function routeTo(sandboxID: string): Record<string, string> {
  return { "E2b-Sandbox-Id": sandboxID, "E2b-Sandbox-Port": "49983" };
}
