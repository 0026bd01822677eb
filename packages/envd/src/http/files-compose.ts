import { randomBytes } from "node:crypto";
import { createReadStream, createWriteStream, type WriteStream } from "node:fs";
import { rename, rm, stat } from "node:fs/promises";
import path from "node:path";
import { finished, pipeline } from "node:stream/promises";
import type { Handler } from "hono";
import type { EnvdContext } from "../context.js";
import { chownTo, makeDirsAs } from "../fs/ownership.js";
import { restUser } from "./auth.js";
import { type HTTPEnv, nodeRequest } from "./bindings.js";
import { readJSON } from "./body.js";
import { HTTPError, toHTTPError } from "./errors.js";
import { restPath } from "./paths.js";
import { prepareTarget, type WrittenFile } from "./write-file.js";

const MAX_COMPOSE_BODY_BYTES = 1024 * 1024;
const MAX_SOURCES = 10_000;

interface ComposeRequest {
  sourcePaths: string[];
  destination: string;
  username: string | undefined;
}

/**
 * POST /files/compose: concatenates `source_paths` in order into `destination` (for clients that
 * upload a big file in chunks), then deletes the sources. The result appears atomically: it is
 * assembled in a temp file next to the destination and renamed into place.
 */
export function composeFiles(ctx: EnvdContext): Handler<HTTPEnv> {
  return async (c) => {
    const req = parseComposeRequest(await readJSON(nodeRequest(c), MAX_COMPOSE_BODY_BYTES));
    const user = restUser(ctx, c, req.username);
    const { defaultWorkdir } = ctx.state;
    const destination = restPath(req.destination, user, defaultWorkdir);
    const sources: string[] = [];
    for (const source of req.sourcePaths) {
      const resolved = restPath(source, user, defaultWorkdir);
      if (resolved === destination) {
        throw new HTTPError(400, `source path '${source}' cannot be the same as the destination`);
      }
      const stats = await stat(resolved).catch(() => undefined);
      if (!stats) throw new HTTPError(404, `source file not found: ${source}`);
      if (!stats.isFile()) throw new HTTPError(400, `source path is not a regular file: ${source}`);
      sources.push(resolved);
    }
    const { dest } = await prepareTarget(destination);
    const dir = path.dirname(dest);
    try {
      await makeDirsAs(dir, user);
    } catch (err) {
      throw toHTTPError(err, `error creating directory '${dir}'`);
    }

    const tmp = path.join(dir, `.moat-compose-${randomBytes(8).toString("hex")}`);
    let out: WriteStream | undefined;
    try {
      out = createWriteStream(tmp, { flags: "wx", mode: 0o644 });
      for (const source of sources) await pipeline(createReadStream(source), out, { end: false });
      out.end();
      await finished(out);
      await chownTo(tmp, user);
      await rename(tmp, dest);
    } catch (err) {
      out?.destroy();
      if (out) await finished(out).catch(() => {});
      await rm(tmp, { force: true }).catch(() => {});
      throw toHTTPError(err, `error composing '${destination}'`);
    }
    // Duplicated sources are fine to list twice; removing the second time is a no-op.
    await Promise.all(sources.map((s) => rm(s, { force: true }).catch(() => {})));
    const entry: WrittenFile = { path: destination, name: path.basename(destination), type: "file" };
    return c.json(entry);
  };
}

function parseComposeRequest(raw: unknown): ComposeRequest {
  if (typeof raw !== "object" || raw === null || Array.isArray(raw)) {
    throw new HTTPError(400, "body must be a JSON object");
  }
  const body = raw as Record<string, unknown>;
  const sourcePaths = body.source_paths;
  if (!Array.isArray(sourcePaths) || sourcePaths.length === 0) {
    throw new HTTPError(400, "source_paths must be a non-empty array of paths");
  }
  if (sourcePaths.length > MAX_SOURCES)
    throw new HTTPError(400, `source_paths holds more than ${MAX_SOURCES} paths`);
  if (!sourcePaths.every((p): p is string => typeof p === "string" && p !== "")) {
    throw new HTTPError(400, "source_paths must hold non-empty strings");
  }
  const destination = body.destination;
  if (typeof destination !== "string" || destination === "")
    throw new HTTPError(400, "destination is required");
  const username = body.username;
  if (username != null && typeof username !== "string") throw new HTTPError(400, "username must be a string");
  return { sourcePaths, destination, username: username ?? undefined };
}
