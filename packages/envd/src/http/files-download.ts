import type { Stats } from "node:fs";
import type { FileHandle } from "node:fs/promises";
import path from "node:path";
import { pipeline, Readable } from "node:stream";
import { createGzip } from "node:zlib";
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

const READ_CHUNK_BYTES = 1024 * 1024;

/**
 * GET /files: streams a file as the request's user may read it. Honours `Accept-Encoding: gzip`, a
 * single `Range`, and the usual conditional headers (a Range or conditional request is answered
 * uncompressed, as envd does, so byte offsets and validators stay meaningful).
 */
export function downloadFile(ctx: EnvdContext): Handler<HTTPEnv> {
  return async (c) => {
    const via = checkFileAccess(ctx, c, "read");
    const user = fileUser(ctx, c, via, c.req.query("username"));
    const requested = c.req.query("path");
    if (!requested) throw new HTTPError(400, "path query parameter is required");
    const target = restPath(requested, user, ctx.state.defaultWorkdir);
    let encoding = negotiateEncoding(c.req.header("accept-encoding"));
    const opened = await openFileAs(target, accessFor(user));
    let handle: FileHandle | undefined = opened.handle;
    const { stats } = opened;
    try {
      setFileHeaders(c, target, stats);

      const conditional = preconditions(c, stats);
      if (conditional === 304) return c.body(null, 304);
      if (conditional === 412) return errorResponse(c, 412, "precondition failed");

      // Pseudo files (/proc, /sys) report size 0 but have content: stream them to EOF, unranged.
      const sized = stats.size > 0;
      const rangeHeader = sized && rangeApplies(c, stats) ? c.req.header("range") : undefined;
      const range = parseRange(rangeHeader, stats.size);
      if (range.kind === "unsatisfiable") {
        c.header("Content-Range", `bytes */${stats.size}`);
        return errorResponse(c, 416, `range not satisfiable for a file of ${stats.size} bytes`);
      }
      if (c.req.header("range") || conditional === "conditional") encoding = "identity";

      let start = 0;
      let end = stats.size - 1;
      let status: 200 | 206 = 200;
      if (range.kind === "partial") {
        ({ start, end } = range);
        status = 206;
        c.header("Content-Range", `bytes ${start}-${end}/${stats.size}`);
      }
      if (encoding === "gzip") c.header("Content-Encoding", "gzip");
      else if (sized) c.header("Content-Length", String(end - start + 1));
      if (c.req.method === "HEAD") return c.body(null, status);

      // Big reads: every chunk costs a trip through the web-stream adapter.
      const file = handle.createReadStream(sized ? { start, end, highWaterMark: READ_CHUNK_BYTES } : {});
      handle = undefined; // the stream closes it, on end, error or cancel
      let body: Readable = file;
      if (encoding === "gzip") {
        body = pipeline(file, createGzip(), () => {});
      }
      return c.body(Readable.toWeb(body) as ReadableStream, status);
    } finally {
      await handle?.close();
    }
  };
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
