import { AsyncLocalStorage } from "node:async_hooks";
import { writeSync } from "node:fs";
import { createRequire } from "node:module";
import { type DestinationStream, type Logger, pino } from "pino";

export type { Logger };

/**
 * Fields every log line written inside a unit of work carries (a request's `requestId`, its
 * `traceId`): set with `logContext.run({...}, fn)`, added to each line by the logger's mixin.
 */
export const logContext = new AsyncLocalStorage<Record<string, string>>();

export const LOG_FORMATS = ["pretty", "json"] as const;
export type LogFormat = (typeof LOG_FORMATS)[number];

/**
 * The format of log lines: `MOAT_LOG_FORMAT` (pretty or json) when set, else pretty on a terminal
 * and JSON otherwise (a pipe, a file, journald, a log shipper).
 */
export function logFormat(
  env: NodeJS.ProcessEnv = process.env,
  isTTY = process.stderr.isTTY === true,
): LogFormat {
  const wanted = env.MOAT_LOG_FORMAT?.trim().toLowerCase();
  if (wanted === "pretty" || wanted === "json") return wanted;
  return isTTY ? "pretty" : "json";
}

/**
 * Logs on stderr, JSON or pretty (see logFormat); `MOAT_LOG_LEVEL` (or `level`) sets the threshold.
 * Every line carries `component: name` once.
 */
export function createLogger(name: string, level?: string): Logger {
  return pino(
    {
      level: level ?? process.env.MOAT_LOG_LEVEL ?? "info",
      base: { component: name },
      mixin: () => logContext.getStore() ?? {},
    },
    destination(logFormat()),
  );
}

/** A logger that drops everything, for tests and library use. */
export function createNoopLogger(): Logger {
  return pino({ level: "silent" });
}

// One stream per format for the whole process, so lines of several loggers never interleave.
const destinations = new Map<LogFormat, DestinationStream>();

function destination(format: LogFormat): DestinationStream {
  let stream = destinations.get(format);
  if (!stream) {
    stream = (format === "pretty" ? prettyStream() : undefined) ?? pino.destination({ fd: 2, sync: true });
    destinations.set(format, stream);
  }
  return stream;
}

let beforeLine: (() => void) | undefined;

/**
 * `fn` runs before each pretty log line is written: a status line being rewritten on the terminal
 * (setup progress) ends itself there, so a log line never lands in the middle of it.
 */
export function beforeLogLine(fn: (() => void) | undefined): void {
  beforeLine = fn;
}

/** Fields the pretty line leaves out: pino's own, and the ones said elsewhere on the line. */
const HIDDEN = new Set(["level", "time", "pid", "hostname", "name", "msg", "component", "err", "error"]);

/**
 * pino-pretty, written synchronously (a line is on the terminal before the next statement runs):
 * one line per entry, `time LEVEL component message key=value…`; an error's message without its
 * stack (JSON keeps the stack). Loaded only when wanted, so envd's bundle does not carry it;
 * undefined when it is not installed.
 */
function prettyStream(): DestinationStream | undefined {
  let factory: typeof import("pino-pretty").prettyFactory;
  try {
    factory = createRequire(import.meta.url)("pino-pretty").prettyFactory;
  } catch {
    return undefined;
  }
  const prettify = factory({
    colorize: process.stderr.isTTY === true && !process.env.NO_COLOR,
    translateTime: "SYS:HH:MM:ss",
    hideObject: true,
    messageFormat: (log, messageKey, _level, { colors }) => {
      const component = typeof log.component === "string" ? `${colors.magenta(log.component)} ` : "";
      const fields = Object.entries(log)
        .filter(([key, value]) => !HIDDEN.has(key) && key !== messageKey && value !== undefined)
        .map(([key, value]) => colors.gray(`${key}=${formatValue(value)}`));
      const err = errorMessage(log.err ?? log.error);
      return [
        `${component}${String(log[messageKey] ?? "")}`,
        ...(err ? [colors.red(err)] : []),
        ...fields,
      ].join(" ");
    },
  });
  return {
    write(line: string) {
      beforeLine?.();
      writeAll(prettify(line));
    },
  };
}

/** Writes all of `text` to stderr, waiting out a full pipe (EAGAIN) as pino's own stream does. */
function writeAll(text: string): void {
  let buffer = Buffer.from(text);
  while (buffer.length > 0) {
    try {
      buffer = buffer.subarray(writeSync(2, buffer));
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "EAGAIN") throw err;
      Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 10);
    }
  }
}
function formatValue(value: unknown): string {
  if (typeof value === "string") return /^[^\s"=]+$/.test(value) ? value : JSON.stringify(value);
  return JSON.stringify(value) ?? String(value);
}

/** An error logged as `{ err }`: its message (and code), for a person to read. */
function errorMessage(err: unknown): string | undefined {
  if (err === undefined || err === null) return undefined;
  if (typeof err === "object") {
    const { message, code } = err as { message?: unknown; code?: unknown };
    if (typeof message === "string")
      return typeof code === "string" && !message.includes(code) ? `${message} (${code})` : message;
  }
  return String(err);
}
