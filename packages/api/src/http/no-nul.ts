/**
 * Refuses a NUL character in a request's URL or JSON body with a 400. Nothing the API takes may
 * hold one (ids, names, metadata and env vars are database text, which cannot store it, and an
 * environment or argv cannot carry it either), and refusing it here gives one clear answer
 * instead of a database error deep inside a handler.
 */
import type { Context, MiddlewareHandler } from "hono";
import { errorResponse } from "./errors.js";

/** A `\u0000` escape whose backslash is not itself escaped. */
const ESCAPED_NUL = /(?:^|[^\\])(?:\\\\)*\\u0000/;

/** `readBody` says which requests' JSON bodies are read (not the streamed template uploads). */
export function refuseNUL(options: { readBody(c: Context): boolean }): MiddlewareHandler {
  return async (c, next) => {
    const url = c.req.url;
    if (url.includes("\0") || /%00/.test(url)) {
      return errorResponse(
        c,
        400,
        "the URL holds a NUL character (%00), which no id, name or value may contain",
      );
    }
    if (c.req.raw.body && options.readBody(c) && /\bjson\b/i.test(c.req.header("content-type") ?? "")) {
      const text = await c.req.text();
      if (text.includes("\0") || ESCAPED_NUL.test(text)) {
        return errorResponse(
          c,
          400,
          "the request body holds a NUL character (\\u0000), which no id, name or value may contain",
        );
      }
    }
    return next();
  };
}
