/**
 * Workaround (b) of design.md for runsc before 20240801: it decides "this is the root netns" by
 * the existence of /proc/sys/net/core/rmem_default, which Linux 6.x shows in every netns, so it
 * refuses `--network=sandbox` everywhere. A private copy of the binary tests a same-length path that
 * only the root netns has instead (the doubled slashes keep the length; the kernel ignores them).
 * Go strings carry their length, so a same-length swap leaves the binary otherwise intact.
 */
export const ROOT_NETNS_PROBE_PATH = "/proc/sys/net/core/rmem_default";
export const PATCHED_PROBE_PATH = "/proc/sys//net//core/dev_weight";

/** The plain form of PATCHED_PROBE_PATH, for checking that it really is root-netns-only here. */
export const PATCHED_PROBE_FILE = "/proc/sys/net/core/dev_weight";

/** Returns a copy of `binary` with every occurrence of `from` replaced by `to` (same length). */
export function replaceAllBytes(
  binary: Buffer,
  from: string,
  to: string,
): { patched: Buffer; count: number } {
  const needle = Buffer.from(from);
  const replacement = Buffer.from(to);
  if (needle.length !== replacement.length || needle.length === 0) {
    throw new Error(`replacement must have the same non-zero length: ${from} (${needle.length}) vs ${to}`);
  }
  const patched = Buffer.from(binary);
  let count = 0;
  for (let at = patched.indexOf(needle); at !== -1; at = patched.indexOf(needle, at + needle.length)) {
    replacement.copy(patched, at);
    count++;
  }
  return { patched, count };
}

/** The netns workaround applied to a runsc binary; `count` is how many places were patched. */
export function patchRunscNetnsCheck(binary: Buffer): { patched: Buffer; count: number } {
  return replaceAllBytes(binary, ROOT_NETNS_PROBE_PATH, PATCHED_PROBE_PATH);
}
