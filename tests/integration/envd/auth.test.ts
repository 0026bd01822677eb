import assert from "node:assert/strict";
import { readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import { fileSignature } from "@moat/envd";
import { AuthenticationError, type Sandbox } from "e2b";
import {
  debugSandbox,
  ENVD_URL,
  initEnvd,
  makeUserDir,
  type RunningEnvd,
  startEnvd,
} from "../helpers/envd.js";

const TOKEN = "moat-test-token-5b1f";

function filesURL(query: Record<string, string>): string {
  return `${ENVD_URL}/files?${new URLSearchParams(query)}`;
}

async function expectError(res: Response, status: number): Promise<string> {
  assert.equal(res.status, status);
  assert.match(res.headers.get("content-type") ?? "", /application\/json/);
  const body = (await res.json()) as { code: number; message: string };
  assert.equal(body.code, status);
  assert.equal(typeof body.message, "string");
  return body.message;
}

function postInit(body: string): Promise<Response> {
  return fetch(`${ENVD_URL}/init`, { method: "POST", headers: { "content-type": "application/json" }, body });
}

describe("envd /init, access token and signed file URLs", () => {
  let envd: RunningEnvd;
  let sbx: Sandbox;
  let dir: string;

  before(async () => {
    envd = await startEnvd();
    sbx = await debugSandbox();
    dir = makeUserDir("/tmp/moat-test-auth-");
  });
  after(async () => {
    await envd.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  test("an unsecured envd serves every route without a token", async () => {
    assert.equal((await fetch(`${ENVD_URL}/envs`)).status, 200);
    const metrics = await fetch(`${ENVD_URL}/metrics`);
    assert.equal(metrics.status, 200);
    const m = (await metrics.json()) as Record<string, number>;
    for (const key of [
      "ts",
      "cpu_count",
      "cpu_used_pct",
      "mem_total",
      "mem_used",
      "mem_cache",
      "mem_total_mib",
      "mem_used_mib",
      "disk_used",
      "disk_total",
    ]) {
      assert.equal(typeof m[key], "number", key);
    }
    assert.ok(m.cpu_count! >= 1 && m.mem_total! > m.mem_used! && m.disk_total! > m.disk_used!);
    assert.ok(Math.abs(m.ts! - Date.now() / 1000) < 60);
  });

  test("/init refuses bad JSON, wrong types and unknown users with 400", async () => {
    await expectError(await postInit("{not json"), 400);
    await expectError(await postInit("[1, 2]"), 400);
    await expectError(await initEnvd({ envVars: { A: 1 } }), 400);
    await expectError(await initEnvd({ envVars: "A=1" }), 400);
    await expectError(await initEnvd({ accessToken: 42 }), 400);
    await expectError(await initEnvd({ timestamp: "not a date" }), 400);
    await expectError(await initEnvd({ defaultWorkdir: "relative/dir" }), 400);
    const message = await expectError(await initEnvd({ defaultUser: "no-such-user-moat" }), 400);
    assert.match(message, /no-such-user-moat/);
    await expectError(await postInit(JSON.stringify({ caBundle: "x".repeat(5 * 1024 * 1024) })), 413);
    // None of the refused bodies changed anything.
    assert.deepEqual(await (await fetch(`${ENVD_URL}/envs`)).json(), { E2B_SANDBOX: "true" });
  });

  test("/init sets env vars, token and defaults, and answers 204 with the envd version", async () => {
    const res = await initEnvd({
      envVars: { FOO: "bar", MOAT_TEST: "1" },
      accessToken: TOKEN,
      timestamp: new Date().toISOString(),
      defaultUser: "user",
      defaultWorkdir: dir,
      lifecycleID: "ignored",
    });
    assert.equal(res.status, 204);
    assert.equal(res.headers.get("x-envd-version"), "0.6.13");
    // Re-init after a resume proves the token (in the body as E2B's orchestrator sends it, or in
    // X-Access-Token as moat's does) and stays fine; only its holder may replace it (a fork's).
    assert.equal((await initEnvd({ accessToken: TOKEN, envVars: { FOO: "baz" } })).status, 204);
    const withHeader = await fetch(`${ENVD_URL}/init`, {
      method: "POST",
      headers: { "content-type": "application/json", "x-access-token": TOKEN },
      body: JSON.stringify({ envVars: { FOO: "baz" } }),
    });
    assert.equal(withHeader.status, 204);
    const swap = (headers: Record<string, string>, accessToken: string) =>
      fetch(`${ENVD_URL}/init`, {
        method: "POST",
        headers: { "content-type": "application/json", ...headers },
        body: JSON.stringify({ accessToken }),
      });
    await expectError(await swap({}, "another-token"), 401);
    assert.equal((await swap({ "x-access-token": TOKEN }, "another-token")).status, 204);
    // The old token opens nothing any more; the new one does, and gives the token back.
    assert.equal((await fetch(`${ENVD_URL}/envs`, { headers: { "x-access-token": TOKEN } })).status, 401);
    await expectError(await swap({ "x-access-token": TOKEN }, TOKEN), 401);
    assert.equal((await swap({ "x-access-token": "another-token" }, TOKEN)).status, 204);
  });

  test("a secured envd refuses /init and /freeze without its token, before changing anything", async () => {
    const attempts: Array<Record<string, string>> = [{}, { "x-access-token": "wrong" }];
    for (const headers of attempts) {
      for (const body of [
        { envVars: { INJECTED: "1", BASH_FUNC_ls: "() { id; }" }, defaultUser: "root" },
        { accessToken: "another-token", envVars: { INJECTED: "1" } },
      ]) {
        const res = await fetch(`${ENVD_URL}/init`, {
          method: "POST",
          headers: { "content-type": "application/json", ...headers },
          body: JSON.stringify(body),
        });
        await expectError(res, 401);
      }
      // A right token in the body does not make up for a wrong header.
      if (headers["x-access-token"]) {
        const res = await fetch(`${ENVD_URL}/init`, {
          method: "POST",
          headers: { "content-type": "application/json", ...headers },
          body: JSON.stringify({ accessToken: TOKEN, envVars: { INJECTED: "1" } }),
        });
        await expectError(res, 401);
      }
      await expectError(await fetch(`${ENVD_URL}/freeze`, { method: "POST", headers }), 401);
    }
    const envs = (await (
      await fetch(`${ENVD_URL}/envs`, { headers: { "x-access-token": TOKEN } })
    ).json()) as Record<string, string>;
    assert.equal(envs.INJECTED, undefined);
    assert.equal(envs.BASH_FUNC_ls, undefined);
    // The default user is still `user`: a file written without naming one belongs to them.
    const file = path.join(dir, "whose.txt");
    const up = await fetch(filesURL({ path: file }), {
      method: "POST",
      headers: { "content-type": "application/octet-stream", "x-access-token": TOKEN },
      body: "x",
    });
    assert.equal(up.status, 200);
    assert.notEqual(statSync(file).uid, 0);
  });

  test("the SDK without the token gets AuthenticationError", async () => {
    await assert.rejects(sbx.commands.run("true"), AuthenticationError);
    await assert.rejects(sbx.files.read(path.join(dir, "x.txt")), AuthenticationError);
    await assert.rejects(sbx.files.write(path.join(dir, "x.txt"), "x"), AuthenticationError);
  });

  test("REST routes need X-Access-Token; /health does not", async () => {
    assert.equal((await fetch(`${ENVD_URL}/health`)).status, 204);
    await expectError(await fetch(`${ENVD_URL}/envs`), 401);
    await expectError(await fetch(`${ENVD_URL}/envs`, { headers: { "x-access-token": "wrong" } }), 401);
    await expectError(await fetch(`${ENVD_URL}/metrics`), 401);
    await expectError(
      await fetch(`${ENVD_URL}/files/compose`, {
        method: "POST",
        body: JSON.stringify({ source_paths: ["a"], destination: "b" }),
      }),
      401,
    );

    const envs = await fetch(`${ENVD_URL}/envs`, { headers: { "x-access-token": TOKEN } });
    assert.equal(envs.status, 200);
    const vars = (await envs.json()) as Record<string, string>;
    assert.equal(vars.FOO, "baz");
    assert.equal(vars.MOAT_TEST, "1");
    assert.equal(vars.E2B_SANDBOX, "true");
    assert.equal((await fetch(`${ENVD_URL}/metrics`, { headers: { "x-access-token": TOKEN } })).status, 200);
  });

  test("RPC calls pass with the token and fail without it", async () => {
    const call = (headers: Record<string, string>) =>
      fetch(`${ENVD_URL}/process.Process/List`, {
        method: "POST",
        headers: { "content-type": "application/json", "connect-protocol-version": "1", ...headers },
        body: "{}",
      });
    assert.equal((await call({ "x-access-token": TOKEN })).status, 200);
    const denied = await call({ "x-access-token": "wrong" });
    assert.equal(denied.status, 401);
    assert.equal(((await denied.json()) as { code: string }).code, "unauthenticated");
  });

  test("/files accepts the header, and rejects a wrong one", async () => {
    const file = path.join(dir, "with-header.txt");
    const up = await fetch(filesURL({ path: file }), {
      method: "POST",
      headers: { "content-type": "application/octet-stream", "x-access-token": TOKEN },
      body: "via header",
    });
    assert.equal(up.status, 200);
    const down = await fetch(filesURL({ path: file }), { headers: { "x-access-token": TOKEN } });
    assert.equal(await down.text(), "via header");
    await expectError(await fetch(filesURL({ path: file }), { headers: { "x-access-token": "nope" } }), 401);
    // A wrong header is not rescued by a valid signature.
    const signature = fileSignature(file, "read", "", TOKEN);
    await expectError(
      await fetch(filesURL({ path: file, signature }), { headers: { "x-access-token": "nope" } }),
      401,
    );
  });

  test("signed URLs work for the operation, path and user they were made for", async () => {
    const file = path.join(dir, "signed.txt");
    const upload = filesURL({ path: file, signature: fileSignature(file, "write", "", TOKEN) });
    const up = await fetch(upload, {
      method: "POST",
      headers: { "content-type": "application/octet-stream" },
      body: "signed upload",
    });
    assert.equal(up.status, 200);
    assert.equal(readFileSync(file, "utf8"), "signed upload");

    const read = await fetch(filesURL({ path: file, signature: fileSignature(file, "read", "", TOKEN) }));
    assert.equal(read.status, 200);
    assert.equal(await read.text(), "signed upload");

    // With a user, the username is part of what is signed.
    const asRoot = fileSignature(file, "read", "root", TOKEN);
    assert.equal((await fetch(filesURL({ path: file, username: "root", signature: asRoot }))).status, 200);
    await expectError(await fetch(filesURL({ path: file, username: "user", signature: asRoot })), 401);

    // A write signature does not read, a signature for another path does not apply, none at all is 401.
    await expectError(
      await fetch(filesURL({ path: file, signature: fileSignature(file, "write", "", TOKEN) })),
      401,
    );
    const other = path.join(dir, "other.txt");
    writeFileSync(other, "secret");
    await expectError(
      await fetch(filesURL({ path: other, signature: fileSignature(file, "read", "", TOKEN) })),
      401,
    );
    await expectError(await fetch(filesURL({ path: file })), 401);
    await expectError(await fetch(filesURL({ path: file, signature: "v1_garbage" })), 401);
  });

  test("a signed URL acts as the user it was signed for, whatever Authorization comes with it", async () => {
    const secret = path.join(dir, "root-only.txt");
    writeFileSync(secret, "root's", { mode: 0o600 });
    const basic = (name: string) => ({
      authorization: `Basic ${Buffer.from(`${name}:`).toString("base64")}`,
    });
    // Signed for the default user (no username): Basic root does not make it root.
    const forDefault = filesURL({ path: secret, signature: fileSignature(secret, "read", "", TOKEN) });
    await expectError(await fetch(forDefault, { headers: basic("root") }), 403);
    // Signed for root: root it is, whatever Basic says.
    const forRoot = filesURL({
      path: secret,
      username: "root",
      signature: fileSignature(secret, "read", "root", TOKEN),
    });
    const read = await fetch(forRoot, { headers: basic("user") });
    assert.equal(read.status, 200);
    assert.equal(await read.text(), "root's");
    // A signed upload for the default user writes as that user, Basic root or not.
    const upload = path.join(dir, "signed-as-default.txt");
    const up = await fetch(filesURL({ path: upload, signature: fileSignature(upload, "write", "", TOKEN) }), {
      method: "POST",
      headers: { "content-type": "application/octet-stream", ...basic("root") },
      body: "x",
    });
    assert.equal(up.status, 200);
    assert.notEqual(statSync(upload).uid, 0);
  });

  test("signature expiration is signed and enforced", async () => {
    const file = path.join(dir, "expiring.txt");
    writeFileSync(file, "until later");
    const future = Math.floor(Date.now() / 1000) + 300;
    const valid = fileSignature(file, "read", "", TOKEN, future);
    const ok = await fetch(filesURL({ path: file, signature: valid, signature_expiration: String(future) }));
    assert.equal(ok.status, 200);
    assert.equal(await ok.text(), "until later");

    // Moving the expiration breaks the signature.
    await expectError(
      await fetch(filesURL({ path: file, signature: valid, signature_expiration: String(future + 60) })),
      401,
    );
    const past = Math.floor(Date.now() / 1000) - 10;
    const expired = fileSignature(file, "read", "", TOKEN, past);
    const message = await expectError(
      await fetch(filesURL({ path: file, signature: expired, signature_expiration: String(past) })),
      401,
    );
    assert.match(message, /expired/);
    await expectError(
      await fetch(filesURL({ path: file, signature: valid, signature_expiration: "soon" })),
      401,
    );
  });

  test("signed multipart uploads sign the query path (empty when the part names the file)", async () => {
    const file = path.join(dir, "signed-multipart.txt");
    const form = new FormData();
    form.append("file", new Blob(["multipart, signed"]), file);
    const res = await fetch(filesURL({ signature: fileSignature("", "write", "", TOKEN) }), {
      method: "POST",
      body: form,
    });
    assert.equal(res.status, 200);
    assert.deepEqual(await res.json(), [{ path: file, name: "signed-multipart.txt", type: "file" }]);
    assert.equal(readFileSync(file, "utf8"), "multipart, signed");
  });

  test("relative paths resolve against the default workdir from /init", async () => {
    const res = await fetch(filesURL({ path: "in-workdir.txt" }), {
      method: "POST",
      headers: { "content-type": "application/octet-stream", "x-access-token": TOKEN },
      body: "workdir",
    });
    assert.deepEqual(await res.json(), [
      { path: path.join(dir, "in-workdir.txt"), name: "in-workdir.txt", type: "file" },
    ]);
  });

  test("unknown users are 401 and unknown routes 404, both as JSON", async () => {
    const file = path.join(dir, "with-header.txt");
    const message = await expectError(
      await fetch(filesURL({ path: file, username: "no-such-user-moat" }), {
        headers: { "x-access-token": TOKEN },
      }),
      401,
    );
    assert.match(message, /no-such-user-moat/);
    const basic = `Basic ${Buffer.from("no-such-user-moat:").toString("base64")}`;
    await expectError(
      await fetch(filesURL({ path: file }), { headers: { "x-access-token": TOKEN, authorization: basic } }),
      401,
    );
    await expectError(await fetch(`${ENVD_URL}/nope`, { headers: { "x-access-token": TOKEN } }), 404);
  });
});
