/**
 * OpenTelemetry traces for moat's components (`@moat/shared/telemetry`), set by the standard
 * variables and off unless asked for:
 *
 * - `OTEL_SDK_DISABLED=true` or `OTEL_TRACES_EXPORTER=none`: off.
 * - `OTEL_TRACES_EXPORTER=otlp` (or `console`), or, with it unset, an OTLP endpoint
 *   (`OTEL_EXPORTER_OTLP_ENDPOINT` or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`): on.
 * - `OTEL_EXPORTER_OTLP_(TRACES_)PROTOCOL`: `http/protobuf` (default) or `http/json`.
 * - `OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`, `OTEL_TRACES_SAMPLER(_ARG)`, `OTEL_BSP_*`,
 *   `OTEL_EXPORTER_OTLP_HEADERS` as the specification says.
 *
 * Off, no provider is registered: the API's tracer is a no-op whose spans cost a few allocations
 * and nothing is sent anywhere. Spans are made by hand at the operations that matter (no
 * auto-instrumentation patching every module); W3C `traceparent` carries them across each hop.
 */
import {
  type Attributes,
  type Context,
  context,
  propagation,
  type Span,
  SpanKind,
  SpanStatusCode,
  trace,
} from "@opentelemetry/api";
import { AsyncLocalStorageContextManager } from "@opentelemetry/context-async-hooks";
import { W3CTraceContextPropagator } from "@opentelemetry/core";
import { OTLPTraceExporter as OTLPJSONTraceExporter } from "@opentelemetry/exporter-trace-otlp-http";
import { OTLPTraceExporter as OTLPProtoTraceExporter } from "@opentelemetry/exporter-trace-otlp-proto";
import {
  defaultResource,
  detectResources,
  envDetector,
  resourceFromAttributes,
} from "@opentelemetry/resources";
import {
  BasicTracerProvider,
  BatchSpanProcessor,
  ConsoleSpanExporter,
  type SpanExporter,
  type SpanProcessor,
} from "@opentelemetry/sdk-trace-base";
import type { Logger } from "../logger.js";

export { type Attributes, type Context, type Span, SpanKind };

export interface Telemetry {
  /** Whether spans are recorded and exported. */
  readonly enabled: boolean;
  /** Where they go, for the start-up log line (`otlp http/protobuf`, `console`). */
  readonly exporters: readonly string[];
  /** Sends what is buffered and stops; later spans are no-ops. */
  shutdown(): Promise<void>;
}

let started: Telemetry | undefined;

/** The exporters the environment asks for; empty when tracing is off. */
export function tracesExporters(env: NodeJS.ProcessEnv = process.env): string[] {
  if (env.OTEL_SDK_DISABLED?.trim().toLowerCase() === "true") return [];
  const named = env.OTEL_TRACES_EXPORTER?.trim();
  if (named) {
    const list = named
      .split(",")
      .map((e) => e.trim().toLowerCase())
      .filter(Boolean);
    return list.includes("none") ? [] : [...new Set(list)];
  }
  // Unlike the specification's default (otlp to localhost:4318), nothing unless an endpoint is set.
  return env.OTEL_EXPORTER_OTLP_ENDPOINT?.trim() || env.OTEL_EXPORTER_OTLP_TRACES_ENDPOINT?.trim()
    ? ["otlp"]
    : [];
}

/**
 * Registers the process's tracer provider from the `OTEL_*` variables (once: moat up runs every
 * component in one process; later calls get the first one's). `serviceName` is the default of
 * `OTEL_SERVICE_NAME`.
 */
export function startTelemetry(options: {
  serviceName: string;
  logger?: Logger;
  env?: NodeJS.ProcessEnv;
}): Telemetry {
  if (started) return started;
  const env = options.env ?? process.env;
  const processors: SpanProcessor[] = [];
  const names: string[] = [];
  for (const name of tracesExporters(env)) {
    const exporter = exporterFor(name, env, options.logger);
    if (!exporter) continue;
    processors.push(new BatchSpanProcessor(exporter.exporter));
    names.push(exporter.name);
  }
  if (processors.length === 0) {
    started = { enabled: false, exporters: [], shutdown: async () => undefined };
    return started;
  }
  const resource = defaultResource()
    .merge(resourceFromAttributes({ "service.name": options.serviceName }))
    .merge(detectResources({ detectors: [envDetector] }));
  const provider = new BasicTracerProvider({ resource, spanProcessors: processors });
  context.setGlobalContextManager(new AsyncLocalStorageContextManager().enable());
  propagation.setGlobalPropagator(new W3CTraceContextPropagator());
  trace.setGlobalTracerProvider(provider);
  let stopped: Promise<void> | undefined;
  started = {
    enabled: true,
    exporters: names,
    shutdown: () => {
      stopped ??= provider.shutdown().catch((err: unknown) => {
        options.logger?.warn({ err }, "sending the last traces failed");
      });
      return stopped;
    },
  };
  options.logger?.info({ exporters: names }, "tracing on");
  return started;
}

function exporterFor(
  name: string,
  env: NodeJS.ProcessEnv,
  logger: Logger | undefined,
): { exporter: SpanExporter; name: string } | undefined {
  if (name === "console") return { exporter: new ConsoleSpanExporter(), name };
  if (name !== "otlp") {
    logger?.warn(
      { exporter: name },
      "unknown OTEL_TRACES_EXPORTER entry ignored: moat knows otlp, console and none",
    );
    return undefined;
  }
  const protocol = (
    env.OTEL_EXPORTER_OTLP_TRACES_PROTOCOL ||
    env.OTEL_EXPORTER_OTLP_PROTOCOL ||
    "http/protobuf"
  ).trim();
  if (protocol === "http/json") return { exporter: new OTLPJSONTraceExporter(), name: "otlp http/json" };
  if (protocol !== "http/protobuf") {
    logger?.warn(
      { protocol },
      "OTLP protocol not supported: moat sends http/protobuf (set OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf or http/json; the collector's port 4318)",
    );
  }
  return { exporter: new OTLPProtoTraceExporter(), name: "otlp http/protobuf" };
}

/** The tracer of one component (`api`, `orchestrator`, …): its name tells spans apart in moat up's one process. */
function tracerOf(component: string) {
  return trace.getTracer(`moat-${component}`);
}

/**
 * Runs `fn` inside a new span (a child of the active one, or of `parent`), ended when `fn`
 * settles; a throw marks it failed with the error's message and is rethrown.
 */
export async function inSpan<T>(
  component: string,
  name: string,
  fn: (span: Span) => Promise<T> | T,
  options: { attributes?: Attributes; kind?: SpanKind; parent?: Context } = {},
): Promise<T> {
  const ctx = options.parent ?? context.active();
  return tracerOf(component).startActiveSpan(
    name,
    {
      kind: options.kind ?? SpanKind.INTERNAL,
      attributes: { "moat.component": component, ...options.attributes },
    },
    ctx,
    async (span) => {
      try {
        return await fn(span);
      } catch (err) {
        span.setStatus({
          code: SpanStatusCode.ERROR,
          message: err instanceof Error ? err.message : String(err),
        });
        throw err;
      } finally {
        span.end();
      }
    },
  );
}

/** A span that already happened (a phase timed elsewhere), as a child of the active span. */
export function recordSpan(
  component: string,
  name: string,
  startMs: number,
  endMs: number,
  attributes?: Attributes,
) {
  const active = trace.getActiveSpan();
  if (!active?.isRecording()) return;
  const span = tracerOf(component).startSpan(
    name,
    { startTime: startMs, attributes: { "moat.component": component, ...attributes } },
    context.active(),
  );
  span.end(endMs);
}

/** Marks the active span failed (for errors answered rather than thrown). */
export function markActiveSpanFailed(message: string): void {
  trace.getActiveSpan()?.setStatus({ code: SpanStatusCode.ERROR, message });
}

/** Adds attributes to the active span, if one records. */
export function annotateActiveSpan(attributes: Attributes): void {
  const span = trace.getActiveSpan();
  if (span?.isRecording()) span.setAttributes(attributes);
}

/** The active span's trace id, when tracing is on and a span is active. */
export function activeTraceId(): string | undefined {
  const span = trace.getActiveSpan();
  if (!span?.isRecording()) return undefined;
  return span.spanContext().traceId;
}

/** Writes the active trace context (`traceparent`, `tracestate`) into outgoing headers. */
export function injectTraceHeaders(
  set: (name: string, value: string) => void,
  ctx: Context = context.active(),
): void {
  propagation.inject(ctx, undefined, { set: (_carrier, key, value) => set(key, value) });
}

/** The context an incoming request's `traceparent` names (the active one when it has none). */
export function extractTraceContext(get: (name: string) => string | null | undefined): Context {
  return propagation.extract(context.active(), undefined, {
    get: (_carrier, key) => get(key) ?? undefined,
    keys: () => ["traceparent", "tracestate"],
  });
}
