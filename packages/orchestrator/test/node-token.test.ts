import assert from "node:assert/strict";
import { chmod, mkdtemp, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, describe, test } from "node:test";
import { Code, ConnectError } from "@connectrpc/connect";
import { ensureNodeToken, nodeTokenPath, requireNodeToken } from "../src/server/node-token.js";

describe("node token", () => {
  const dirs: string[] = [];
  const tempDir = async () => {
    const dir = await mkdtemp(path.join(tmpdir(), "moat-token-"));
    dirs.push(dir);
    return dir;
  };
  after(async () => {
    for (const dir of dirs) await rm(dir, { recursive: true, force: true });
  });

  test("made on first start (0600, random), then kept", async () => {
    const dir = await tempDir();
    const token = await ensureNodeToken(dir);
    assert.match(token, /^[0-9a-f]{64}$/);
    assert.equal((await stat(nodeTokenPath(dir))).mode & 0o777, 0o600);
    assert.equal(await ensureNodeToken(dir), token);
    assert.notEqual(await ensureNodeToken(await tempDir()), token);
  });

  test("a token file readable by others is made 0600; an unusable one is refused", async () => {
    const dir = await tempDir();
    const token = await ensureNodeToken(dir);
    await chmod(nodeTokenPath(dir), 0o644);
    assert.equal(await ensureNodeToken(dir), token);
    assert.equal((await stat(nodeTokenPath(dir))).mode & 0o777, 0o600);
    await writeFile(nodeTokenPath(dir), "short\n");
    await assert.rejects(ensureNodeToken(dir), /no usable node token .* remove it to make a new one/);
  });

  test("a call without the token, or with another, is unauthenticated", async () => {
    const token = "t".repeat(64);
    const handler = requireNodeToken(token)(async () => "answered" as never);
    const call = (authorization?: string) =>
      handler({
        header: new Headers(authorization === undefined ? {} : { authorization }),
      } as never) as unknown as Promise<string>;
    assert.equal(await call(`Bearer ${token}`), "answered");
    for (const [authorization, word] of [
      [undefined, "missing"],
      ["Bearer wrong", "wrong"],
      [token, "wrong"],
      [`Bearer ${token}x`, "wrong"],
    ] as const) {
      await assert.rejects(call(authorization), (err: unknown) => {
        assert.ok(err instanceof ConnectError);
        assert.equal(err.code, Code.Unauthenticated);
        assert.match(err.rawMessage, new RegExp(`^${word} node token: send 'authorization: Bearer <token>'`));
        return true;
      });
    }
  });
});
