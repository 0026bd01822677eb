/**
 * Refuses request bodies over `maxBytes` with a 413, before anything reads them. A declared
 * Content-Length is checked up front; a chunked body is read up to the limit and replaced by
 * the bytes read. (Hono's own bodyLimit rebuilds the request from the adapter's request object,
 * which fails when @hono/node-server does not replace the global Request, as in a library.)
 */
import type { MiddlewareHandler } from "hono";
import { errorResponse } from "./errors.js";

export function bodyLimit(maxBytes: number): MiddlewareHandler {
  return async (c, next) => {
    const raw = c.req.raw;
    if (!raw.body) return next();
    const tooLarge = () => errorResponse(c, 413, `request body is larger than ${maxBytes} bytes`);
    const length = raw.headers.get("content-length");
    if (length !== null && !raw.headers.has("transfer-encoding")) {
      return Number(length) > maxBytes ? tooLarge() : next();
    }
    const chunks: Uint8Array[] = [];
    let size = 0;
    const reader = raw.body.getReader();
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      size += value.byteLength;
      if (size > maxBytes) {
        await reader.cancel().catch(() => undefined);
        return tooLarge();
      }
      chunks.push(value);
    }
    const headers = new Headers(raw.headers);
    headers.delete("transfer-encoding");
    headers.set("content-length", String(size));
    c.req.raw = new Request(c.req.url, { method: raw.method, headers, body: Buffer.concat(chunks) });
    return next();
  };
}
