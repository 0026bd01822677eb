import { lstat, unlink } from "node:fs/promises";
import path from "node:path";
import { Readable } from "node:stream";
import type { Handler } from "hono";
import type { EnvdContext } from "../context.js";
import { holdDir } from "../fs/held-dir.js";
import { type Access, accessFor } from "../services/filesystem/access.js";
import { restUser } from "./auth.js";
import { type HTTPEnv, nodeRequest } from "./bindings.js";
import { readJSON } from "./body.js";
import { HTTPError } from "./errors.js";
import { openFileAs } from "./open-file.js";
import { restPath } from "./paths.js";
import { writeFileAs } from "./write-file.js";

const MAX_COMPOSE_BODY_BYTES = 1024 * 1024;
const MAX_SOURCES = 10_000;
const READ_CHUNK_BYTES = 1024 * 1024;

interface ComposeRequest {
  sourcePaths: string[];
  destination: string;
  username: string | undefined;
}

/** A source file as checked: where it is and which inode it was. */
interface Source {
  path: string;
  dev: number;
  ino: number;
}

/**
 * POST /files/compose: concatenates `source_paths` in order into `destination` (for clients that
 * upload a big file in chunks), then deletes the sources, all with the user's permissions: they
 * must be able to read and delete every source and write the destination, which is checked before
 * anything is written. The result appears atomically, as an upload does.
 */
export function composeFiles(ctx: EnvdContext): Handler<HTTPEnv> {
  return async (c) => {
    const req = parseComposeRequest(await readJSON(nodeRequest(c), MAX_COMPOSE_BODY_BYTES));
    const user = restUser(ctx, c, req.username);
    const access = accessFor(user);
    const { defaultWorkdir } = ctx.state;
    const destination = restPath(req.destination, user, defaultWorkdir);
    const sources: Source[] = [];
    for (const source of req.sourcePaths) {
      const resolved = restPath(source, user, defaultWorkdir);
      if (resolved === destination) {
        throw new HTTPError(400, `source path '${source}' cannot be the same as the destination`);
      }
      const { handle, stats } = await openFileAs(resolved, access);
      await handle.close();
      try {
        await access.requireUnlink(resolved);
      } catch (err) {
        throw new HTTPError(403, `source '${source}' cannot be removed: permission denied`, { cause: err });
      }
      sources.push({ path: resolved, dev: stats.dev, ino: stats.ino });
    }
    const written = await writeFileAs(destination, () => concatenate(sources, access), user, {}, ctx.logger, {
      replace: true,
    });
    // Duplicated sources are fine to list twice; removing the second time is a no-op.
    for (const source of sources) await removeSource(source, access).catch(() => {});
    return c.json({ path: written.path, name: written.name, type: written.type });
  };
}

/** The sources one after the other, each opened again (and checked again) when its turn comes. */
function concatenate(sources: Source[], access: Access): Readable {
  async function* chunks() {
    for (const source of sources) {
      const { handle, stats } = await openFileAs(source.path, access);
      if (stats.dev !== source.dev || stats.ino !== source.ino) {
        await handle.close();
        throw new HTTPError(409, `source '${source.path}' was replaced while composing; try again`);
      }
      // The stream closes the handle once read, or when the concatenation is abandoned.
      yield* handle.createReadStream({ start: 0, highWaterMark: READ_CHUNK_BYTES });
    }
  }
  return Readable.from(chunks(), { objectMode: false });
}

/**
 * Unlinks a composed source from its directory held open, and only if it still is the file that
 * was composed: a path swapped meanwhile must not make envd delete something else.
 */
async function removeSource(source: Source, access: Access): Promise<void> {
  const dir = await holdDir(path.dirname(source.path), access);
  try {
    const name = dir.entry(path.basename(source.path));
    const entry = await lstat(name);
    if (entry.dev !== source.dev || entry.ino !== source.ino) return;
    await access.requireUnlinkIn(dir.handle, entry, source.path);
    await unlink(name);
  } finally {
    await dir.close();
  }
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
