/**
 * A request Node's HTTP parser rejected ("clientError"): how the API and the client proxy answer
 * it with their JSON error instead of Node's empty answers.
 */
import type { Socket } from "node:net";

export interface ClientErrorAnswer {
  status: 400 | 408 | 431;
  message: string;
  /** The request was a HEAD: its answer has no body (the client would read one as the next answer). */
  head: boolean;
}

/**
 * What to answer, or undefined when the socket is only to be destroyed: the client is gone, or an
 * answer on that connection has already begun.
 */
export function clientErrorAnswer(
  error: NodeJS.ErrnoException & { rawPacket?: Buffer },
  socket: Socket,
): ClientErrorAnswer | undefined {
  const inFlight = (socket as { _httpMessage?: { headersSent?: boolean } })._httpMessage;
  if (error.code === "ECONNRESET" || !socket.writable || inFlight?.headersSent) return undefined;
  const head = error.rawPacket?.subarray(0, 5).toString("latin1") === "HEAD ";
  if (error.code === "HPE_HEADER_OVERFLOW")
    return { status: 431, message: "the request's headers are too large", head };
  if (error.code === "ERR_HTTP_REQUEST_TIMEOUT")
    return { status: 408, message: "the request did not arrive in time", head };
  const reason = (error as { reason?: string }).reason ?? error.code ?? "unparseable";
  return { status: 400, message: `malformed HTTP request: ${reason}`, head };
}
