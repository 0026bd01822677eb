/**
 * One entry of a sandbox's log as the node keeps it, and the parsing of the raw lines a sandbox
 * writes (envd's stderr, in the runsc container's log). Everything here comes from inside the
 * sandbox: it is data only, cut to size, with control characters replaced so that a terminal
 * showing it (`moat sandboxes logs`) cannot be steered; the node's clock bounds its times.
 */

export type LogLevel = "debug" | "info" | "warn" | "error";
export const LOG_LEVELS: readonly LogLevel[] = ["debug", "info", "warn", "error"];
/** "start": the start command's output; "envd": envd's own; "runtime": other lines of the container's output; "node": the node's notes. */
export type LogSource = "start" | "envd" | "runtime" | "node";

export interface LogEntry {
  /** Unix ms, on the node's clock. */
  t: number;
  l: LogLevel;
  m: string;
  s: LogSource;
  f?: Record<string, string>;
}

export const MAX_MESSAGE_CHARS = 8192;
const MAX_FIELDS = 16;
const MAX_KEY_CHARS = 64;
const MAX_VALUE_CHARS = 1024;
/** pino's own keys, and those the node sets itself. */
const RESERVED = new Set(["level", "time", "msg", "pid", "hostname", "component", "name", "source", "v"]);

// C0 and C1 controls but tab: escape sequences must not reach a terminal.
// biome-ignore lint/suspicious/noControlCharactersInRegex: matching them is the point
const CONTROL = /[\u0000-\u0008\u000a-\u001f\u007f-\u009f]/g;

export function clean(text: string, max: number): string {
  return text.slice(0, max).replace(CONTROL, "\uFFFD");
}

function pinoLevel(level: number): LogLevel {
  if (level >= 50) return "error";
  if (level >= 40) return "warn";
  if (level >= 30) return "info";
  return "debug";
}

/**
 * A raw line of the container's output as an entry. envd's JSON lines (pino) give level, message,
 * fields and a time, which is kept only between `notBefore` and `now` (a sandbox sets its own
 * clock); any other line is a runtime line at info.
 */
export function parseLine(line: string, now: number, notBefore: number): LogEntry {
  const floor = Math.min(notBefore, now);
  if (line.startsWith("{")) {
    let parsed: unknown;
    try {
      parsed = JSON.parse(line);
    } catch {
      parsed = undefined;
    }
    if (parsed && typeof parsed === "object" && !Array.isArray(parsed)) {
      const obj = parsed as Record<string, unknown>;
      if (typeof obj.level === "number" && typeof obj.msg === "string") {
        const time = typeof obj.time === "number" && Number.isFinite(obj.time) ? obj.time : now;
        const fields: Record<string, string> = {};
        let count = 0;
        for (const [key, value] of Object.entries(obj)) {
          if (RESERVED.has(key) || value === null || value === undefined) continue;
          if (count++ >= MAX_FIELDS) break;
          const text = typeof value === "object" ? JSON.stringify(value) : String(value);
          fields[clean(key, MAX_KEY_CHARS)] = clean(text, MAX_VALUE_CHARS);
        }
        return {
          t: Math.max(floor, Math.min(now, Math.floor(time))),
          l: pinoLevel(obj.level),
          m: clean(obj.msg, MAX_MESSAGE_CHARS),
          s: obj.source === "start" ? "start" : "envd",
          ...(count > 0 ? { f: fields } : {}),
        };
      }
    }
  }
  return { t: Math.max(floor, now), l: "info", m: clean(line, MAX_MESSAGE_CHARS), s: "runtime" };
}
