/**
 * The API's HTTP server. What Node or the adapter cannot turn into a Request (malformed HTTP,
 * headers too large, an unusable Host) is answered with the API's `{code, message}` error like
 * everything else, instead of Node's empty answers.
 */
import http, { STATUS_CODES } from "node:http";
import type { Socket } from "node:net";
import { getRequestListener, RequestError } from "@hono/node-server";
import type { ErrorBody } from "./errors.js";

type Fetch = Parameters<typeof getRequestListener>[0];

function jsonError(status: number, message: string): Response {
  return Response.json({ code: status, message } satisfies ErrorBody, { status });
}

export function createAPIServer(fetch: Fetch): http.Server {
  const listener = getRequestListener(fetch, {
    overrideGlobalObjects: false,
    // Nothing here depends on the Host: a request without one (HTTP/1.0) is served as any other.
    hostname: "localhost",
    errorHandler: (err) =>
      err instanceof RequestError
        ? jsonError(400, `bad request: ${err.message}`)
        : jsonError(500, "internal error"),
  });
  const server = http.createServer({ requireHostHeader: false }, listener);
  server.on("clientError", (error: NodeJS.ErrnoException & { rawPacket?: Buffer }, socket: Socket) => {
    const inFlight = (socket as { _httpMessage?: { headersSent?: boolean } })._httpMessage;
    if (error.code === "ECONNRESET" || !socket.writable || inFlight?.headersSent) {
      socket.destroy();
      return;
    }
    const [status, message] =
      error.code === "HPE_HEADER_OVERFLOW"
        ? [431, "the request's headers are too large"]
        : error.code === "ERR_HTTP_REQUEST_TIMEOUT"
          ? [408, "the request did not arrive in time"]
          : [
              400,
              `malformed HTTP request: ${(error as { reason?: string }).reason ?? error.code ?? "unparseable"}`,
            ];
    const body = Buffer.from(JSON.stringify({ code: status, message } satisfies ErrorBody));
    const head = [
      `HTTP/1.1 ${status} ${STATUS_CODES[status]}`,
      "content-type: application/json",
      `content-length: ${body.length}`,
      "connection: close",
      "",
      "",
    ].join("\r\n");
    // The answer to a HEAD has no body: the client would read it as the start of the next answer.
    const isHead = error.rawPacket?.subarray(0, 5).toString("latin1") === "HEAD ";
    socket.end(isHead ? head : Buffer.concat([Buffer.from(head), body]));
    socket.destroySoon();
  });
  return server;
}
