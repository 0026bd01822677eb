/**
 * The API's request id and trace on the node: every unary RPC runs in a server span, a child of
 * the caller's `traceparent`, and its log lines carry the caller's `x-request-id` and the trace id.
 * Streams (builds, events) outlive the interceptor's call: template-service.ts traces its builds.
 */
import type { Interceptor } from "@connectrpc/connect";
import { logContext, REQUEST_ID_HEADER, requestIdFrom, traceIdOf } from "@moat/shared";
import { activeTraceId, extractTraceContext, inSpan, SpanKind } from "@moat/shared/telemetry";

/** The log fields of a call: its request id (when the caller sent one) and trace id. */
export function callLogFields(header: Headers): Record<string, string> {
  const fields: Record<string, string> = {};
  const presented = header.get(REQUEST_ID_HEADER);
  // Only the node's token holders call here, yet a malformed id is still not logged as it is.
  if (presented) fields.requestId = requestIdFrom(presented);
  const traceId = activeTraceId() ?? traceIdOf(header.get("traceparent"));
  if (traceId) fields.traceId = traceId;
  return fields;
}

export function requestContext(): Interceptor {
  return (next) => async (req) => {
    if (req.stream) return next(req);
    const parent = extractTraceContext((name) => req.header.get(name));
    return inSpan(
      "orchestrator",
      `${req.service.typeName}/${req.method.name}`,
      () => logContext.run(callLogFields(req.header), () => next(req)),
      { kind: SpanKind.SERVER, parent, attributes: sandboxAttribute(req.message) },
    );
  };
}

/** The sandbox a call is about, when its request names one (most do, as `sandbox_id`). */
function sandboxAttribute(message: unknown): Record<string, string> {
  const named = message as { sandboxId?: unknown; sandbox?: { sandboxId?: unknown } };
  const id = named.sandboxId ?? named.sandbox?.sandboxId;
  return typeof id === "string" && id ? { "moat.sandbox_id": id } : {};
}
