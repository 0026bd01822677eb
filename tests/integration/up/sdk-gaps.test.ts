/**
 * Gaps the SDK's own suite found, end to end with the unmodified e2b SDK against `moat up`:
 * signed file URLs on the shared sandbox address (E2B_SANDBOX_URL), and never across sandboxes;
 * requests in the middle of an auto-pause (setTimeout(0) with onTimeout: pause); and `mcp` at
 * create, refused as a gateway that cannot start, with nothing left behind.
 */
import assert from "node:assert/strict";
import http from "node:http";
import { after, before, describe, test } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
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

  describe("requests in the middle of an auto-pause (setTimeout(0), onTimeout: pause)", () => {
    /** Longest any one call may take: a pause takes about a second; the bug was a 10 s hang. */
    const PROMPT_MS = 8_000;

    /** Runs `call`, failing when it takes longer than PROMPT_MS; answers its value. */
    async function prompt<T>(what: string, call: () => Promise<T>): Promise<T> {
      const started = Date.now();
      try {
        return await call();
      } finally {
        const took = Date.now() - started;
        assert.ok(took < PROMPT_MS, `${what} took ${took} ms`);
      }
    }

    test("isRunning polled after setTimeout(0) answers true, then false, promptly; connect resumes", async () => {
      for (let round = 0; round < 2; round++) {
        const sbx = await Sandbox.create("base", { lifecycle: { onTimeout: "pause" } });
        await sbx.setTimeout(0);
        const deadline = Date.now() + 30_000;
        while (await prompt("isRunning", () => sbx.isRunning())) {
          assert.ok(Date.now() < deadline, "paused within 30 s");
          await sleep(50);
        }
        assert.equal((await prompt("getInfo", () => sbx.getInfo())).state, "paused");
        await prompt("connect", () => sbx.connect());
        assert.equal(await prompt("isRunning", () => sbx.isRunning()), true);
        assert.equal((await sbx.commands.run("echo resumed")).stdout, "resumed\n");
        await sbx.kill();
      }
    });

    test("connect, getInfo and setTimeout at any point of the pause answer, and connect leaves it running", async () => {
      for (const delay of [0, 150, 400, 800]) {
        const sbx = await Sandbox.create("base", { lifecycle: { onTimeout: "pause" } });
        await sbx.setTimeout(0);
        await sleep(delay);
        const [info] = await Promise.all([
          prompt("getInfo", () => sbx.getInfo()),
          prompt("setTimeout", () => sbx.setTimeout(120_000)),
          prompt("isRunning", () => sbx.isRunning()),
        ]);
        assert.ok(info.state === "running" || info.state === "paused");
        await prompt("connect", () => sbx.connect());
        assert.equal(await prompt("isRunning", () => sbx.isRunning()), true, `connect after ${delay} ms`);
        assert.equal((await sbx.getInfo()).state, "running");
        assert.equal((await sbx.commands.run("echo up")).stdout, "up\n");
        await sbx.kill();
      }
    });

    test("with autoResume, traffic during the pause waits for it and resumes the sandbox", async () => {
      const sbx = await Sandbox.create("base", { lifecycle: { onTimeout: "pause", autoResume: true } });
      await sbx.files.write("/home/user/kept.txt", "kept");
      await sbx.setTimeout(0);
      const reads = [0, 100, 250, 500, 900, 1400].map(async (delay) => {
        await sleep(delay);
        return prompt(`read after ${delay} ms`, () => sbx.files.read("/home/user/kept.txt"));
      });
      assert.deepEqual(await Promise.all(reads), Array(6).fill("kept"));
      assert.equal(await sbx.isRunning(), true);
      await sbx.kill();
    });

    test("without autoResume, traffic during the pause gets the proxy's 502 JSON or envd's answer, never a hang or a reset", async () => {
      const sbx = await Sandbox.create("base", { lifecycle: { onTimeout: "pause" } });
      const accessToken = (sbx as unknown as { envdAccessToken: string }).envdAccessToken;
      await sbx.setTimeout(0);
      const seen = new Set<number>();
      const deadline = Date.now() + 30_000;
      for (;;) {
        const res = await prompt("GET /envs", () =>
          fetch(`${moat.env.E2B_SANDBOX_URL}/envs`, {
            headers: { ...routeTo(sbx.sandboxId), "X-Access-Token": accessToken },
          }),
        );
        seen.add(res.status);
        if (res.status === 502) {
          assert.deepEqual(await res.json(), {
            message: "The sandbox was not found",
            sandboxId: sbx.sandboxId,
            code: 502,
            requestId: res.headers.get("x-request-id"),
          });
          break;
        }
        assert.equal(res.status, 200, await res.text());
        await res.arrayBuffer().catch(() => undefined);
        assert.ok(Date.now() < deadline, "paused within 30 s");
        await sleep(20);
      }
      assert.ok(seen.has(502));
      await sbx.kill();
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
