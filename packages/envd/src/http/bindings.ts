import { IncomingMessage } from "node:http";
import type { Http2Bindings, HttpBindings } from "@hono/node-server";
import type { Context } from "hono";
import { HTTPError } from "./errors.js";

/** Hono env of the REST app: @hono/node-server hands every handler the raw Node request. */
export type HTTPEnv = { Bindings: HttpBindings | Http2Bindings };

export type HTTPContext = Context<HTTPEnv>;

/**
 * The Node request behind a Hono context, for streaming its body without buffering it. envd
 * serves plain HTTP/1.1, so anything else is a wiring mistake.
 */
export function nodeRequest(c: HTTPContext): IncomingMessage {
  const incoming = (c.env as Partial<HttpBindings> | undefined)?.incoming;
  if (!(incoming instanceof IncomingMessage)) throw new HTTPError(500, "request body is not available");
  return incoming;
}
