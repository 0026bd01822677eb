import { type Logger, pino } from "pino";

export type { Logger };

/** Structured JSON logs on stderr; `MOAT_LOG_LEVEL` (or `level`) sets the threshold. */
export function createLogger(name: string, level?: string): Logger {
  return pino(
    { name, level: level ?? process.env.MOAT_LOG_LEVEL ?? "info", base: { component: name } },
    pino.destination(2),
  );
}

/** A logger that drops everything, for tests and library use. */
export function createNoopLogger(): Logger {
  return pino({ level: "silent" });
}
