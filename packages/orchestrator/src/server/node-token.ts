/**
 * The node token: every RPC to the orchestrator carries `authorization: Bearer <token>`, or it is
 * refused. Whoever can call the RPC creates, kills and runs sandboxes of every team, so a local
 * user who can reach the port (or anyone, with `--host`) must not be able to. The token is a random
 * secret in `<data-dir>/node-token` (mode 0600, made on first start, kept across restarts): `moat
 * up` hands it to its API in-process; a separate API is given it by configuration.
 */
import { createHash, randomBytes, timingSafeEqual } from "node:crypto";
import { chmod, mkdir, readFile, stat, writeFile } from "node:fs/promises";
import path from "node:path";
import { Code, ConnectError, type Interceptor } from "@connectrpc/connect";
import type { Logger } from "@moat/shared";

export const NODE_TOKEN_FILE = "node-token";

export function nodeTokenPath(dataDir: string): string {
  return path.join(dataDir, NODE_TOKEN_FILE);
}

/** The node's token, made (32 random bytes, hex) on first use; a file readable by others is fixed. */
export async function ensureNodeToken(dataDir: string, logger?: Logger): Promise<string> {
  const file = nodeTokenPath(dataDir);
  await mkdir(dataDir, { recursive: true, mode: 0o700 });
  try {
    await writeFile(file, `${randomBytes(32).toString("hex")}\n`, { flag: "wx", mode: 0o600 });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== "EEXIST") throw err;
  }
  const { mode } = await stat(file);
  if ((mode & 0o077) !== 0) {
    logger?.warn(
      { file, mode: (mode & 0o777).toString(8) },
      "the node token was readable by others; made it 0600",
    );
    await chmod(file, 0o600);
  }
  const token = (await readFile(file, "utf8")).trim();
  if (token.length < 32) {
    throw new Error(`${file} holds no usable node token (under 32 characters): remove it to make a new one`);
  }
  return token;
}

/** Refuses every call without the node's token (compared in constant time). */
export function requireNodeToken(token: string): Interceptor {
  const expected = digest(`Bearer ${token}`);
  return (next) => async (req) => {
    const presented = req.header.get("authorization");
    if (presented === null || !timingSafeEqual(digest(presented), expected)) {
      throw new ConnectError(
        `${presented === null ? "missing" : "wrong"} node token: send 'authorization: Bearer <token>' with the token from the file ${NODE_TOKEN_FILE} in the orchestrator's data directory`,
        Code.Unauthenticated,
      );
    }
    return next(req);
  };
}

// Digests have one length whatever was sent, as timingSafeEqual needs.
function digest(value: string): Buffer {
  return createHash("sha256").update(value).digest();
}
