/**
 * Request ids and W3C trace context without the OpenTelemetry SDK: envd (bundled into every
 * sandbox, where it cannot export spans) and the proxies only need to read and check them.
 */
import { randomUUID } from "node:crypto";

/** The header a request id travels in, both ways. */
export const REQUEST_ID_HEADER = "x-request-id";

/**
 * A request id a client may choose: 1–128 of letters, digits and `-_.:`. Anything else (too long,
 * spaces, control or non-ASCII characters) is replaced by one of our own, so an id can neither
 * forge log lines nor bloat them.
 */
const REQUEST_ID = /^[A-Za-z0-9._:-]{1,128}$/;

/** The client's request id when well formed, else a new one (a UUID). */
export function requestIdFrom(presented: string | null | undefined): string {
  return presented && REQUEST_ID.test(presented) ? presented : randomUUID();
}

/** W3C traceparent: version 00, 32 hex trace id, 16 hex parent id, 2 hex flags; all-zero ids invalid. */
const TRACEPARENT = /^00-([0-9a-f]{32})-([0-9a-f]{16})-[0-9a-f]{2}$/;

/** The trace id of a well-formed `traceparent` header, else undefined. */
export function traceIdOf(traceparent: string | null | undefined): string | undefined {
  const match = traceparent ? TRACEPARENT.exec(traceparent.trim()) : null;
  if (!match || /^0+$/.test(match[1]!) || /^0+$/.test(match[2]!)) return undefined;
  return match[1];
}
