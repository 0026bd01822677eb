import type { Stats } from "node:fs";
import { type FileHandle, statfs } from "node:fs/promises";
import path from "node:path";
import { pipeline, Readable } from "node:stream";
import { promisify } from "node:util";
import { createGzip, gzip } from "node:zlib";
import type { Handler } from "hono";
import type { EnvdContext } from "../context.js";
import { accessFor } from "../services/filesystem/access.js";
import { checkFileAccess, fileUser } from "./auth.js";
import type { HTTPContext, HTTPEnv } from "./bindings.js";
import { negotiateEncoding } from "./encoding.js";
import { errorResponse, HTTPError } from "./errors.js";
import { openFileAs } from "./open-file.js";
import { restPath } from "./paths.js";
import { parseRange } from "./range.js";

const gzipAsync = promisify(gzip);

/** Files (and ranges) up to this size are read whole first and sent with their exact length. */
const SMALL_FILE_BYTES = 1024 * 1024;
/** Room for a small file to grow between its stat and its read, so that one read(2) takes it all. */
const GROWTH_SLACK_BYTES = 64 * 1024;
const READ_CHUNK_BYTES = 1024 * 1024;
/** statfs types whose files report size 0 but have content, served a page per read: proc, sysfs, cgroup. */
const PSEUDO_FILESYSTEMS = new Set([0x9fa0, 0x62656572, 0x27e0eb, 0x63677270]);

/**
 * GET /files: a file as the request's user may read it. Honours `Accept-Encoding: gzip`, a single
 * `Range`, and the usual conditional headers (a Range or conditional request is answered
 * uncompressed, as envd does, so byte offsets and validators stay meaningful).
 *
 * The answer is always complete and well-formed, whatever happens to the file meanwhile (a log
 * that grows, a file another process keeps rewriting): small files and ranges are read first and
 * sent with the length actually read; bigger files stream to wherever their end is then, without
 * a length announced in advance. A length fixed from a stat and a file that shrank before it was
 * read would leave the client waiting for bytes that never come.
 */
export function downloadFile(ctx: EnvdContext): Handler<HTTPEnv> {
  return async (c) => {
    const via = checkFileAccess(ctx, c, "read");
    const user = fileUser(ctx, c, via, c.req.query("username"));
    const requested = c.req.query("path");
    if (!requested) throw new HTTPError(400, "path query parameter is required");
    const target = restPath(requested, user, ctx.state.defaultWorkdir);
    const opened = await openFileAs(target, accessFor(user));
    let handle: FileHandle | undefined = opened.handle;
    const { stats } = opened;
    try {
      setFileHeaders(c, target, stats);
      const conditional = preconditions(c, stats);
      if (conditional === 304) return c.body(null, 304);
      if (conditional === 412) return errorResponse(c, 412, "precondition failed");

      // Pseudo files (/proc, /sys) report size 0 but have content: they are read to EOF, unranged.
      const sized = stats.size > 0;
      const rangeHeader = sized && rangeApplies(c, stats) ? c.req.header("range") : undefined;
      const range = parseRange(rangeHeader, stats.size);
      if (range.kind === "unsatisfiable") {
        c.header("Content-Range", `bytes */${stats.size}`);
        return errorResponse(c, 416, `range not satisfiable for a file of ${stats.size} bytes`);
      }
      let encoding = negotiateEncoding(c.req.header("accept-encoding"));
      if (c.req.header("range") || conditional === "conditional") encoding = "identity";

      if (c.req.method === "HEAD") {
        // What a GET would announce, as of the stat.
        if (range.kind === "partial") {
          c.header("Content-Range", `bytes ${range.start}-${range.end}/${stats.size}`);
          c.header("Content-Length", String(range.end - range.start + 1));
          return c.body(null, 206);
        }
        if (encoding === "gzip") c.header("Content-Encoding", "gzip");
        else if (sized) c.header("Content-Length", String(stats.size));
        return c.body(null, 200);
      }

      if (range.kind === "partial") {
        const { start, end } = range;
        if (end - start + 1 > SMALL_FILE_BYTES) {
          c.header("Content-Range", `bytes ${start}-${end}/${stats.size}`);
          c.header("Content-Length", String(end - start + 1));
          const body = fileBody(handle, start, end - start + 1);
          handle = undefined; // the stream closes it, on end, error or cancel
          return c.body(body, 206);
        }
        const buffer = Buffer.allocUnsafe(end - start + 1);
        const { bytesRead } = await handle.read(buffer, 0, buffer.length, start);
        const size = (await handle.stat()).size;
        if (bytesRead === 0) {
          c.header("Content-Range", `bytes */${size}`);
          return errorResponse(c, 416, `range not satisfiable for a file of ${size} bytes`);
        }
        c.header(
          "Content-Range",
          `bytes ${start}-${start + bytesRead - 1}/${Math.max(size, start + bytesRead)}`,
        );
        c.header("Content-Length", String(bytesRead));
        return c.body(bytes(buffer.subarray(0, bytesRead)), 206);
      }

      const whole = await readWhole(handle, stats);
      if (whole) {
        // The validators describe the file as stat'ed; if it changed while it was read, they may
        // not describe these bytes.
        if (changed(stats, await handle.stat())) {
          c.header("ETag", undefined);
          c.header("Last-Modified", undefined);
        }
        if (encoding === "gzip") {
          c.header("Content-Encoding", "gzip");
          return c.body(bytes(await gzipAsync(whole)), 200);
        }
        c.header("Content-Length", String(whole.length));
        return c.body(bytes(whole), 200);
      }

      // Too big to hold: streamed to its end, whose place is only known once reached.
      if (encoding === "gzip") {
        const file = handle.createReadStream({ start: 0, highWaterMark: READ_CHUNK_BYTES });
        handle = undefined; // the stream closes it, on end, error or cancel
        c.header("Content-Encoding", "gzip");
        return c.body(Readable.toWeb(pipeline(file, createGzip(), () => {})) as ReadableStream, 200);
      }
      const body = fileBody(handle, 0);
      handle = undefined; // the stream closes it, on end, error or cancel
      return c.body(body, 200);
    } finally {
      await handle?.close();
    }
  };
}

/**
 * The whole file when it holds at most SMALL_FILE_BYTES, else undefined. A regular file is taken
 * with one read(2) into a buffer larger than the file (from the start again with a bigger one if it
 * filled up): one call returns one state of a file that another process rewrites meanwhile, where
 * reading on from where a first call stopped could join two versions. Pseudo files, served a page
 * per call, are read on to their end.
 */
async function readWhole(handle: FileHandle, stats: Stats): Promise<Buffer | undefined> {
  if (stats.size > SMALL_FILE_BYTES) return undefined;
  if (stats.size === 0 && (await isPseudoFile(handle))) return readToEnd(handle);
  let capacity = Math.min(stats.size + GROWTH_SLACK_BYTES, SMALL_FILE_BYTES + 1);
  for (;;) {
    const buffer = Buffer.allocUnsafe(capacity);
    const { bytesRead } = await handle.read(buffer, 0, capacity, 0);
    if (bytesRead < capacity) return buffer.subarray(0, bytesRead);
    if (capacity > SMALL_FILE_BYTES) return undefined;
    capacity = Math.min(capacity * 2, SMALL_FILE_BYTES + 1);
  }
}

async function readToEnd(handle: FileHandle): Promise<Buffer | undefined> {
  const chunks: Buffer[] = [];
  let total = 0;
  for (;;) {
    const buffer = Buffer.allocUnsafe(GROWTH_SLACK_BYTES);
    const { bytesRead } = await handle.read(buffer, 0, buffer.length, null);
    if (bytesRead === 0) return Buffer.concat(chunks, total);
    chunks.push(buffer.subarray(0, bytesRead));
    total += bytesRead;
    if (total > SMALL_FILE_BYTES) return undefined;
  }
}

async function isPseudoFile(handle: FileHandle): Promise<boolean> {
  const fs = await statfs(`/proc/self/fd/${handle.fd}`).catch(() => undefined);
  return fs !== undefined && PSEUDO_FILESYSTEMS.has(fs.type >>> 0);
}

/** A Buffer as the Uint8Array a Hono body takes (no copy). */
function bytes(buffer: Buffer): Uint8Array<ArrayBuffer> {
  return buffer as Uint8Array<ArrayBuffer>;
}

function changed(before: Stats, after: Stats): boolean {
  return before.size !== after.size || before.mtimeMs !== after.mtimeMs || before.ino !== after.ino;
}

/**
 * The file from `start`, to its end or for `length` bytes, as a stream that owns the handle (closed
 * at the end, on an error and on cancel). Each chunk is read into a buffer of its own and handed on
 * as it is: `Readable.toWeb` copies every chunk, which for a 10 MB file cost more than the read.
 * A ranged stream fails should the file end before `length` bytes: the client's connection is then
 * cut, which it notices, instead of waiting for bytes that never come.
 */
export function fileBody(handle: FileHandle, start: number, length?: number): ReadableStream<Uint8Array> {
  let position = start;
  let left = length ?? Number.POSITIVE_INFINITY;
  let closed = false;
  const close = async () => {
    if (closed) return;
    closed = true;
    await handle.close().catch(() => undefined);
  };
  return new ReadableStream<Uint8Array>(
    {
      async pull(controller) {
        try {
          // Outside Buffer's shared pool: a chunk lends the client no one else's bytes.
          const buffer = Buffer.allocUnsafeSlow(Math.min(READ_CHUNK_BYTES, left));
          const { bytesRead } = await handle.read(buffer, 0, buffer.length, position);
          if (bytesRead === 0) {
            await close();
            if (length !== undefined && left > 0) {
              controller.error(
                new Error(`the file shrank while it was read (${length - left} of ${length} bytes)`),
              );
            } else {
              controller.close();
            }
            return;
          }
          position += bytesRead;
          left -= bytesRead;
          controller.enqueue(buffer.subarray(0, bytesRead));
          if (left <= 0) {
            await close();
            controller.close();
          }
        } catch (err) {
          await close();
          controller.error(err);
        }
      },
      cancel: close,
    },
    // One chunk read ahead while the last is written.
    { highWaterMark: 1 },
  );
}

function setFileHeaders(c: HTTPContext, target: string, stats: Stats): void {
  c.header("Content-Type", "application/octet-stream");
  c.header("Content-Disposition", contentDisposition(path.basename(target)));
  c.header("Vary", "Accept-Encoding");
  c.header("Last-Modified", new Date(stats.mtimeMs).toUTCString());
  c.header("ETag", etag(stats));
  c.header("Accept-Ranges", stats.size > 0 ? "bytes" : "none");
}

/** `inline; filename="…"`, with an RFC 8187 `filename*` when the name is not plain ASCII. */
export function contentDisposition(name: string): string {
  const ascii = name.replace(/[^\x20-\x7e]|["\\]/g, "_");
  if (ascii === name) return `inline; filename="${name}"`;
  const encoded = encodeURIComponent(name).replace(
    /['()*]/g,
    (ch) => `%${ch.charCodeAt(0).toString(16).toUpperCase()}`,
  );
  return `inline; filename="${ascii}"; filename*=UTF-8''${encoded}`;
}

function etag(stats: Stats): string {
  return `"${stats.size.toString(16)}-${Math.trunc(stats.mtimeMs).toString(16)}"`;
}

function etagMatches(header: string, stats: Stats): boolean {
  const tag = etag(stats);
  return header.split(",").some((t) => {
    const value = t.trim().replace(/^W\//, "");
    return value === "*" || value === tag;
  });
}

/** Unix seconds of an HTTP date, or undefined when it does not parse. */
function httpDate(header: string | undefined): number | undefined {
  if (!header) return undefined;
  const ms = Date.parse(header);
  return Number.isNaN(ms) ? undefined : Math.floor(ms / 1000);
}

/**
 * RFC 9110 §13.2.2 order: If-Match, If-Unmodified-Since (412 when failing), then If-None-Match,
 * If-Modified-Since (304). Returns "conditional" when validators were sent but all passed.
 */
function preconditions(c: HTTPContext, stats: Stats): 304 | 412 | "conditional" | "none" {
  const mtime = Math.floor(stats.mtimeMs / 1000);
  const ifMatch = c.req.header("if-match");
  const ifUnmodifiedSince = httpDate(c.req.header("if-unmodified-since"));
  const ifNoneMatch = c.req.header("if-none-match");
  const ifModifiedSince = httpDate(c.req.header("if-modified-since"));
  if (ifMatch !== undefined) {
    if (!etagMatches(ifMatch, stats)) return 412;
  } else if (ifUnmodifiedSince !== undefined && mtime > ifUnmodifiedSince) {
    return 412;
  }
  if (ifNoneMatch !== undefined) {
    if (etagMatches(ifNoneMatch, stats)) return 304;
  } else if (ifModifiedSince !== undefined && mtime <= ifModifiedSince) {
    return 304;
  }
  const any = [ifMatch, ifNoneMatch, c.req.header("if-unmodified-since"), c.req.header("if-modified-since")];
  return any.some((h) => h !== undefined) || c.req.header("if-range") !== undefined ? "conditional" : "none";
}

/** `If-Range`: the Range applies only while the file still matches the validator the client holds. */
function rangeApplies(c: HTTPContext, stats: Stats): boolean {
  const ifRange = c.req.header("if-range");
  if (ifRange === undefined) return true;
  if (ifRange.trim().startsWith('"') || ifRange.trim().startsWith("W/")) {
    return !ifRange.trim().startsWith("W/") && ifRange.trim() === etag(stats);
  }
  return httpDate(ifRange) === Math.floor(stats.mtimeMs / 1000);
}
