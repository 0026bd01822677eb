/**
 * The API's HTTP server. What Node or the adapter cannot turn into a Request (malformed HTTP,
 * headers too large, an unusable Host) is answered with the API's `{code, message}` error like
 * everything else, instead of Node's empty answers.
 */
import http, { STATUS_CODES } from "node:http";
import type { Socket } from "node:net";
import { getRequestListener, RequestError } from "@hono/node-server";
import { clientErrorAnswer } from "@moat/shared";
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
    const answer = clientErrorAnswer(error, socket);
    if (!answer) {
      socket.destroy();
      return;
    }
    const { status, message } = answer;
    const body = Buffer.from(JSON.stringify({ code: status, message } satisfies ErrorBody));
    const head = [
      `HTTP/1.1 ${status} ${STATUS_CODES[status]}`,
      "content-type: application/json",
      `content-length: ${body.length}`,
      "connection: close",
      "",
      "",
    ].join("\r\n");
    socket.end(answer.head ? head : Buffer.concat([Buffer.from(head), body]));
    socket.destroySoon();
  });
  return server;
}
