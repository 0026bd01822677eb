import { HTTPError } from "./errors.js";

export type ResponseEncoding = "gzip" | "identity";

/**
 * Picks the download encoding from `Accept-Encoding`. Node's fetch adds `gzip, deflate` to every
 * request on its own, and gzipping a 10 MB binary costs ~250 ms of CPU, so gzip is only chosen
 * when the client singles it out: it names gzip and no other coding (what the SDK's
 * `gzip: true` sends), ranks it above identity, or refuses identity (q=0). When identity is
 * refused and gzip is not acceptable either, the answer is 406.
 */
export function negotiateEncoding(header: string | undefined): ResponseEncoding {
  if (!header?.trim()) return "identity";
  const entries = header
    .split(",")
    .map(parseEntry)
    .filter((e) => e.name !== "");
  const quality = (name: string) => entries.find((e) => e.name === name)?.q;
  const wildcard = quality("*");
  const gzipListed = quality("gzip") ?? quality("x-gzip");
  const gzip = gzipListed ?? wildcard ?? 0;
  const identity = quality("identity") ?? (wildcard === 0 ? 0 : 1);

  if (identity === 0) {
    if (gzip > 0) return "gzip";
    throw new HTTPError(406, "no acceptable encoding found, supported: [identity, gzip]");
  }
  if (gzipListed === undefined || gzipListed === 0) return "identity";
  const others = entries.filter((e) => e.q > 0 && !["gzip", "x-gzip", "identity", "*"].includes(e.name));
  if (gzipListed > identity || (gzipListed === identity && others.length === 0)) return "gzip";
  return "identity";
}

function parseEntry(part: string): { name: string; q: number } {
  const [name = "", ...params] = part.split(";").map((s) => s.trim());
  let q = 1;
  for (const param of params) {
    const m = /^q\s*=\s*([0-9.]+)$/i.exec(param);
    if (m) {
      const value = Number(m[1]);
      if (Number.isFinite(value)) q = Math.min(Math.max(value, 0), 1);
    }
  }
  return { name: name.toLowerCase(), q };
}
