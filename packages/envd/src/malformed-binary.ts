/**
 * connect-es answers a request message that does not parse as protobuf binary with `internal`
 * (HTTP 500 on a unary call), as if envd had failed, where the client's message is what is
 * malformed. These turn that one error into invalid_argument (HTTP 400), as connect-es already
 * answers a malformed JSON message and as E2B's envd (connect-go) answers both.
 */
import { Code, ConnectError, type Interceptor } from "@connectrpc/connect";
import {
  createAsyncIterable,
  type UniversalHandler,
  type UniversalServerResponse,
} from "@connectrpc/connect/protocol";

/** The start of connect-es's message for a binary request that does not parse. */
const PARSE_BINARY = "parse binary:";

function isMalformedBinary(code: unknown, message: unknown): boolean {
  return (code === Code.Internal || code === "internal") && String(message).startsWith(PARSE_BINARY);
}

/** Streaming calls parse their messages inside the interceptor chain: the error passes here. */
export const malformedBinaryInterceptor: Interceptor = (next) => async (req) => {
  try {
    return await next(req);
  } catch (err) {
    if (err instanceof ConnectError && isMalformedBinary(err.code, err.rawMessage)) {
      throw new ConnectError(err.rawMessage, Code.InvalidArgument);
    }
    throw err;
  }
};

/** Unary calls parse their message before any interceptor: their error answer is rewritten. */
export function withMalformedBinaryAsInvalidArgument(handler: UniversalHandler): UniversalHandler {
  if (handler.method.methodKind !== "unary") return handler;
  const wrapped = async (req: Parameters<UniversalHandler>[0]): Promise<UniversalServerResponse> => {
    const res = await handler(req);
    if (res.status !== 500 || res.body === undefined) return res;
    const chunks: Uint8Array[] = [];
    if (res.body instanceof Uint8Array) chunks.push(res.body);
    else for await (const chunk of res.body) chunks.push(chunk);
    const bytes = Buffer.concat(chunks);
    let error: { code?: unknown; message?: unknown } = {};
    try {
      error = JSON.parse(bytes.toString("utf8")) as typeof error;
    } catch {
      // Not the JSON error body of the Connect protocol: leave it as it is.
    }
    if (!isMalformedBinary(error.code, error.message)) return { ...res, body: createAsyncIterable([bytes]) };
    const body = Buffer.from(JSON.stringify({ code: "invalid_argument", message: error.message }));
    const header = new Headers(res.header);
    header.set("Content-Length", String(body.length));
    return { ...res, status: 400, header, body: createAsyncIterable([body]) };
  };
  return Object.assign(wrapped, handler);
}
