/** What a `Range` header asks of a file of a given size. */
export type RangeRequest =
  | { kind: "full" }
  | { kind: "partial"; start: number; end: number }
  | { kind: "unsatisfiable" };

/**
 * Parses a single-range `Range: bytes=…` header against the file size (end inclusive). A missing,
 * malformed or multi-range header is served as the full file, which RFC 9110 allows; a range
 * starting past the end is unsatisfiable (416).
 */
export function parseRange(header: string | undefined, size: number): RangeRequest {
  if (!header) return { kind: "full" };
  const match = /^\s*bytes\s*=\s*([^,]*)$/i.exec(header);
  if (!match) return { kind: "full" };
  const spec = /^(\d*)\s*-\s*(\d*)$/.exec(match[1]!.trim());
  if (!spec) return { kind: "full" };
  const [, first, last] = spec as unknown as [string, string, string];
  if (first === "") {
    if (last === "") return { kind: "full" };
    const suffix = toInt(last);
    if (suffix === undefined) return { kind: "full" };
    if (suffix === 0 || size === 0) return { kind: "unsatisfiable" };
    return { kind: "partial", start: Math.max(0, size - suffix), end: size - 1 };
  }
  const start = toInt(first);
  const end = last === "" ? Number.MAX_SAFE_INTEGER : toInt(last);
  if (start === undefined || end === undefined || end < start) return { kind: "full" };
  if (start >= size) return { kind: "unsatisfiable" };
  return { kind: "partial", start, end: Math.min(end, size - 1) };
}

function toInt(text: string): number | undefined {
  const value = Number(text);
  return Number.isSafeInteger(value) ? value : undefined;
}
