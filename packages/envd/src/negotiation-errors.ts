/**
 * connect-es answers a request no protocol handler takes (another method than POST: 405; a
 * content type none supports: 415) with a bare status, the only envd errors without a body. These
 * get envd's REST error body `{code, message}` (the HTTP status as code), so every error a client
 * or the proxy sees from envd says what was wrong.
 */
import {
  createAsyncIterable,
  type UniversalHandler,
  type UniversalServerResponse,
} from "@connectrpc/connect/protocol";

const MESSAGES: Record<number, (req: Parameters<UniversalHandler>[0]) => string> = {
  405: (req) => `${req.method} is not allowed here: RPCs take POST`,
  415: (req) =>
    `content type '${req.header.get("Content-Type") ?? ""}' is not one this RPC takes (Connect, gRPC or gRPC-Web)`,
};

export function withNegotiationErrorBodies(handler: UniversalHandler): UniversalHandler {
  const wrapped = async (req: Parameters<UniversalHandler>[0]): Promise<UniversalServerResponse> => {
    const res = await handler(req);
    const message = MESSAGES[res.status];
    if (!message || res.body !== undefined) return res;
    const body = Buffer.from(JSON.stringify({ code: res.status, message: message(req) }));
    const header = new Headers(res.header);
    header.set("Content-Type", "application/json");
    header.set("Content-Length", String(body.length));
    if (res.status === 405) header.set("Allow", "POST");
    return { ...res, header, body: createAsyncIterable([body]) };
  };
  return Object.assign(wrapped, handler);
}
