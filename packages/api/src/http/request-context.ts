/**
 * Every request's id and trace: the client's well-formed `X-Request-Id` or a new one, answered in
 * the same header, put in error bodies (http/errors.ts) and, through `logContext`, in every log
 * line written for the request; a server span per request, a child of the client's `traceparent`
 * when it sends one. The node calls made for the request carry both on (orchestrator/node-client.ts).
 */
import { logContext, REQUEST_ID_HEADER, requestIdFrom, traceIdOf } from "@moat/shared";
import { activeTraceId, extractTraceContext, inSpan, SpanKind } from "@moat/shared/telemetry";
import type { MiddlewareHandler } from "hono";
import { routePath } from "hono/route";
import type { AppEnv } from "./env.js";

/** Routes polled by machines every few seconds: a span each would only be noise. */
const UNTRACED = new Set(["/health", "/metrics"]);

export function requestContext(): MiddlewareHandler<AppEnv> {
  return async (c, next) => {
    const requestId = requestIdFrom(c.req.header(REQUEST_ID_HEADER));
    c.set("requestId", requestId);
    const run = async () => {
      // Off, the client's own trace id still ties its request to our log lines.
      const traceId = activeTraceId() ?? traceIdOf(c.req.header("traceparent"));
      await logContext.run(traceId ? { requestId, traceId } : { requestId }, next);
      setHeader(c, requestId);
    };
    if (UNTRACED.has(c.req.path)) return run();
    const parent = extractTraceContext((name) => c.req.header(name));
    await inSpan(
      "api",
      c.req.method,
      async (span) => {
        await run();
        // The route's pattern, not the path: ids in span names would make every name unique.
        const route = routePath(c, -1);
        span.updateName(`${c.req.method} ${route}`);
        span.setAttributes({
          "http.request.method": c.req.method,
          "http.route": route,
          "http.response.status_code": c.res.status,
          "moat.request_id": requestId,
        });
        if (c.res.status >= 500) span.setStatus({ code: 2 });
      },
      { kind: SpanKind.SERVER, parent },
    );
  };
}

function setHeader(c: Parameters<MiddlewareHandler<AppEnv>>[0], requestId: string): void {
  try {
    c.res.headers.set(REQUEST_ID_HEADER, requestId);
  } catch {
    // A response whose headers are immutable (passed through from fetch): copied once.
    c.res = new Response(c.res.body, c.res);
    c.res.headers.set(REQUEST_ID_HEADER, requestId);
  }
}
