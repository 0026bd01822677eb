import { AsyncLocalStorage } from "node:async_hooks";
import { type Logger, pino } from "pino";

export type { Logger };

/**
 * Fields every log line written inside a unit of work carries (a request's `requestId`, its
 * `traceId`): set with `logContext.run({...}, fn)`, added to each line by the logger's mixin.
 */
export const logContext = new AsyncLocalStorage<Record<string, string>>();

/** Structured JSON logs on stderr; `MOAT_LOG_LEVEL` (or `level`) sets the threshold. */
export function createLogger(name: string, level?: string): Logger {
  return pino(
    {
      name,
      level: level ?? process.env.MOAT_LOG_LEVEL ?? "info",
      base: { component: name },
      mixin: () => logContext.getStore() ?? {},
    },
    pino.destination(2),
  );
}

/** A logger that drops everything, for tests and library use. */
export function createNoopLogger(): Logger {
  return pino({ level: "silent" });
}
