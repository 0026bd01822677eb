import type { IncomingMessage } from "node:http";
import { finished, type Readable, type Writable } from "node:stream";
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
 * The request body as one stream, gunzipped when `Content-Encoding: gzip`; any other encoding is
 * 415. The request itself is never destroyed (that would cut the socket before the error answer);
 * a client that goes away fails the decompressor instead.
 */
export function decodedBody(incoming: IncomingMessage): DecodedBody {
  const header = incoming.headers["content-encoding"]?.trim().toLowerCase();
  if (!header || header === "identity") return { stream: incoming, dispose() {} };
  if (header !== "gzip" && header !== "x-gzip") {
    throw new HTTPError(415, `unsupported Content-Encoding: ${header}, supported: [identity, gzip]`);
  }
  const gunzip = createGunzip();
  // Corrupt input can fail the decompressor before anyone reads it; the error is kept on the
  // stream and surfaces to the reader (pump sees it), so it must not go unhandled here.
  gunzip.on("error", () => {});
  incoming.pipe(gunzip);
  const stopWatching = finished(incoming, { writable: false }, (err) => {
    if (err) gunzip.destroy(err);
  });
  return {
    stream: gunzip,
    dispose() {
      stopWatching();
      incoming.unpipe(gunzip);
      gunzip.destroy();
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
