import type { IncomingMessage } from "node:http";
import { finished, type Readable, Transform, type Writable } from "node:stream";
import { finished as finishedPromise } from "node:stream/promises";
import { createGunzip } from "node:zlib";
import { HTTPError } from "./errors.js";

/**
 * Reads a whole (small) request body, refusing more than `limit` bytes with 413. The request
 * stream is only paused, never destroyed, so the error answer still reaches the client; the Node
 * adapter drains what is left once the answer is sent.
 */
export function readBody(incoming: IncomingMessage, limit: number): Promise<Buffer> {
  const declared = Number(incoming.headers["content-length"]);
  if (declared > limit) return Promise.reject(tooLarge(limit));
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    const onData = (chunk: Buffer) => {
      size += chunk.length;
      if (size > limit) {
        stop();
        reject(tooLarge(limit));
      } else {
        chunks.push(chunk);
      }
    };
    const stopWatching = finished(incoming, { writable: false }, (err) => {
      stop();
      if (err) reject(new HTTPError(400, `error reading request body: ${err.message}`));
      else resolve(Buffer.concat(chunks, size));
    });
    function stop() {
      incoming.off("data", onData);
      incoming.pause();
      stopWatching();
    }
    incoming.on("data", onData);
  });
}

/** Parses a JSON request body of at most `limit` bytes; an empty body is `undefined`. */
export async function readJSON(incoming: IncomingMessage, limit: number): Promise<unknown> {
  const raw = await readBody(incoming, limit);
  const text = raw.toString("utf8").trim();
  if (text === "") return undefined;
  try {
    return JSON.parse(text) as unknown;
  } catch (err) {
    throw new HTTPError(400, `invalid JSON body: ${(err as Error).message}`);
  }
}

function tooLarge(limit: number): HTTPError {
  return new HTTPError(413, `request body is larger than ${limit} bytes`);
}

/** A request body stream and how to let go of it. */
export interface DecodedBody {
  stream: Readable;
  /** Detaches the decompressor, so the Node adapter can drain what the client still sends. */
  dispose(): void;
}

/**
 * How far a gzip body may expand: freely up to 64 MiB, beyond that to at most 256 times the bytes
 * received. Text and logs compress 3-20 times; only data made to expand (deflate reaches ~1000
 * times) goes past it, and is refused with 413 rather than filling the disk at that rate.
 */
const GZIP_FREE_BYTES = 64 * 1024 * 1024;
const GZIP_MAX_RATIO = 256;
/**
 * Compressed input reaches zlib in pieces this small: zlib emits all the output of a piece before
 * backpressure applies, so a piece, not a network chunk a thousand times over, bounds what the
 * decompressor holds in memory.
 */
const GZIP_PIECE_BYTES = 16 * 1024;

/**
 * The request body as one stream, gunzipped when `Content-Encoding: gzip` (streamed, bounded in
 * memory and in expansion); any other encoding is 415. The request itself is never destroyed
 * (that would cut the socket before the error answer); a client that goes away fails the stream.
 */
export function decodedBody(incoming: IncomingMessage): DecodedBody {
  const header = incoming.headers["content-encoding"]?.trim().toLowerCase();
  if (!header || header === "identity") return { stream: incoming, dispose() {} };
  if (header !== "gzip" && header !== "x-gzip") {
    throw new HTTPError(415, `unsupported Content-Encoding: ${header}, supported: [identity, gzip]`);
  }
  let received = 0;
  let expanded = 0;
  const slicer = new Transform({
    transform(chunk: Buffer, _encoding, callback) {
      received += chunk.length;
      for (let at = 0; at < chunk.length; at += GZIP_PIECE_BYTES) {
        this.push(chunk.subarray(at, at + GZIP_PIECE_BYTES));
      }
      callback();
    },
  });
  const gunzip = createGunzip();
  const meter = new Transform({
    transform(chunk: Buffer, _encoding, callback) {
      expanded += chunk.length;
      if (expanded > GZIP_FREE_BYTES && expanded > received * GZIP_MAX_RATIO) {
        callback(
          new HTTPError(
            413,
            `gzip body expands more than ${GZIP_MAX_RATIO} times (past ${GZIP_FREE_BYTES >> 20} MiB); upload it uncompressed`,
          ),
        );
        return;
      }
      callback(null, chunk);
    },
  });
  // Corrupt input fails the decompressor; the error reaches the reader through the meter. It may
  // fail before anyone reads it; the error stays on the stream for the reader (pump sees it), so
  // it must not go unhandled here.
  gunzip.on("error", (err) => meter.destroy(err));
  meter.on("error", () => {});
  incoming.pipe(slicer).pipe(gunzip).pipe(meter);
  const stopWatching = finished(incoming, { writable: false }, (err) => {
    if (err) meter.destroy(err);
  });
  return {
    stream: meter,
    dispose() {
      stopWatching();
      incoming.unpipe(slicer);
      for (const stream of [slicer, gunzip, meter]) stream.destroy();
    },
  };
}

/** Whether an error comes from zlib, i.e. the client sent a corrupt compressed body. */
export function isDecompressionError(err: unknown): boolean {
  const code = (err as NodeJS.ErrnoException | undefined)?.code;
  return typeof code === "string" && code.startsWith("Z_");
}

/**
 * Copies `src` into `dst` with backpressure. On failure (either side, or the client going away)
 * `dst` is destroyed and `src` is unpiped but left alive, so the caller can still answer.
 */
export async function pump(src: Readable, dst: Writable): Promise<void> {
  src.pipe(dst);
  try {
    await Promise.all([finishedPromise(src, { writable: false }), finishedPromise(dst)]);
  } catch (err) {
    src.unpipe(dst);
    dst.destroy();
    // The destination may still be closing its file descriptor.
    await finishedPromise(dst).catch(() => {});
    throw err;
  }
}
