import type { IncomingHttpHeaders } from "node:http";
import { finished, type Readable } from "node:stream";
import busboy from "busboy";
import { HTTPError } from "./errors.js";

/** One `file` part of a multipart upload; `stream` must be consumed or destroyed. */
export interface FilePart {
  filename: string | undefined;
  stream: Readable;
}

/** Bounds on what one multipart upload may hold; past them the upload is refused with 413. */
const LIMITS: busboy.Limits = {
  files: 1000,
  parts: 2000,
  fields: 100,
  fieldSize: 64 * 1024,
  headerPairs: 100,
};

/**
 * Feeds a multipart/form-data body through busboy and hands every part named `file` to `onFile`,
 * one at a time and in order; other parts are skipped. Resolves once every part was handled.
 * On the first failure (a handler error, malformed input, a limit, the client going away) the
 * part in flight is destroyed, parsing stops, and the promise rejects once that part's handler
 * has cleaned up, so no temp file outlives the answer.
 */
export function receiveMultipart(
  headers: IncomingHttpHeaders,
  body: Readable,
  onFile: (part: FilePart) => Promise<void>,
): Promise<void> {
  return new Promise((resolve, reject) => {
    let parser: busboy.Busboy;
    try {
      // preservePath: the part's filename is the destination path, directories included.
      parser = busboy({ headers, preservePath: true, defParamCharset: "utf8", limits: LIMITS });
    } catch (err) {
      reject(new HTTPError(400, `invalid multipart request: ${(err as Error).message}`));
      return;
    }
    let failure: unknown;
    let current: Readable | undefined;
    let chain = Promise.resolve();

    const fail = (err: unknown) => {
      if (failure !== undefined) return;
      failure = err;
      stopWatching();
      body.unpipe(parser);
      current?.destroy(err instanceof Error ? err : new Error(String(err)));
      parser.destroy();
      chain.finally(() => reject(err));
    };

    parser.on("file", (name, stream, info) => {
      // A part waiting its turn can be failed by busboy; its reader sees that error later.
      stream.on("error", () => {});
      if (failure !== undefined || name !== "file") {
        stream.resume();
        return;
      }
      chain = chain
        .then(async () => {
          if (failure !== undefined) {
            stream.destroy();
            return;
          }
          current = stream;
          try {
            await onFile({ filename: info.filename, stream });
          } finally {
            current = undefined;
          }
        })
        .catch(fail);
    });
    for (const event of ["partsLimit", "filesLimit", "fieldsLimit"]) {
      parser.on(event, () =>
        fail(new HTTPError(413, `multipart upload exceeds the ${event.replace("Limit", "")} limit`)),
      );
    }
    parser.on("error", (err: Error) => fail(new HTTPError(400, `malformed multipart body: ${err.message}`)));
    parser.on("close", () => {
      chain.then(() => {
        if (failure === undefined) {
          stopWatching();
          resolve();
        }
      });
    });
    // The client going away ends the body without 'end'; busboy alone would wait forever.
    const stopWatching = finished(body, { writable: false }, (err) => {
      if (err) fail(err);
    });
    body.pipe(parser);
  });
}
