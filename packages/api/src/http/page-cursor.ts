/**
 * The opaque page tokens. The template lists' `nextToken`: base64url of "<time>__<id>", the
 * position after a page's last row (as E2B's cursors, and as the sandbox list's in
 * handlers/list-filters.ts). A build log's `nextCursor`: base64url of "log:<ordinal>".
 */
import { InvalidRequestError } from "../errors.js";

export function encodePageCursor(after: { time: Date; id: string }): string {
  return Buffer.from(`${after.time.toISOString()}__${after.id}`).toString("base64url");
}

export function decodePageCursor(token: string): { time: Date; id: string } {
  const text = Buffer.from(token, "base64url").toString("utf8");
  const match = /^(\d{4}-\d\d-\d\dT[\d:.]+Z)__([a-z0-9-]{1,64})$/.exec(text);
  const time = match ? new Date(match[1]!) : undefined;
  if (!match || !time || Number.isNaN(time.getTime())) {
    throw new InvalidRequestError("nextToken is not a token this API issued");
  }
  return { time, id: match[2]! };
}

export function encodeLogCursor(ordinal: number): string {
  return Buffer.from(`log:${ordinal}`).toString("base64url");
}

export function decodeLogCursor(cursor: string): number {
  const match = /^log:(\d{1,15})$/.exec(Buffer.from(cursor, "base64url").toString());
  if (!match) {
    throw new InvalidRequestError(
      "pageCursor is not a nextCursor this API returned; start again without it (or with cursor, a time in ms)",
    );
  }
  return Number(match[1]);
}
