/**
 * What the operator commands print: aligned tables on a terminal, JSON for scripts. Text that a
 * sandbox or a team chose (metadata, log lines, names) may hold terminal control sequences (an
 * escape that retitles the window, rewrites the screen or fakes a prompt): they are printed
 * escaped, never raw.
 */

/** C0 and C1 control characters but tab and newline, and DEL. */
// biome-ignore lint/suspicious/noControlCharactersInRegex: matching them is the point.
const CONTROL = /[\u0000-\u0008\u000b-\u001f\u007f-\u009f]/g;

/** The text with every control character (and, in a table cell, newline and tab) made visible. */
export function safeText(text: string, { cell = false } = {}): string {
  const escaped = text.replace(CONTROL, (ch) => `\\x${ch.charCodeAt(0).toString(16).padStart(2, "0")}`);
  return cell ? escaped.replace(/\n/g, "\\n").replace(/\t/g, "\\t") : escaped;
}

/** JSON with the C1 controls and DEL escaped too (JSON.stringify leaves them raw). */
export function safeJSON(value: unknown): string {
  return JSON.stringify(value, null, 2).replace(
    /[\u007f-\u009f]/g,
    (ch) => `\\u${ch.charCodeAt(0).toString(16).padStart(4, "0")}`,
  );
}

/** Rows under a header, columns padded to their widest cell. */
export function table(header: string[], rows: string[][]): string {
  const all = [header, ...rows.map((r) => r.map((cell) => safeText(cell, { cell: true })))];
  const widths = header.map((_, i) => Math.max(...all.map((r) => (r[i] ?? "").length)));
  return all
    .map((r) =>
      r
        .map((cell, i) => cell.padEnd(widths[i]!))
        .join("  ")
        .trimEnd(),
    )
    .join("\n");
}

/** "2m", "3h", "5d": how long ago (or, negative, until) an ISO time is. */
export function age(iso: string | null | undefined, now = Date.now()): string {
  if (!iso) return "-";
  const ms = now - new Date(iso).getTime();
  if (!Number.isFinite(ms)) return "-";
  const future = ms < 0;
  const s = Math.abs(ms) / 1000;
  const text =
    s < 60
      ? `${Math.floor(s)}s`
      : s < 3600
        ? `${Math.floor(s / 60)}m`
        : s < 86400
          ? `${Math.floor(s / 3600)}h`
          : `${Math.floor(s / 86400)}d`;
  return future ? `in ${text}` : `${text} ago`;
}
