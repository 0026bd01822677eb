/**
 * runsc version strings. Debian builds print `runsc version 0.0~20240729.0`; official releases print
 * `runsc version release-20240807.0`. Both carry the release date, which is what moat compares.
 */
export interface RunscVersion {
  /** The version as runsc prints it, e.g. `0.0~20240729.0`. */
  raw: string;
  /** The release date as YYYYMMDD, when the version has one (a source build may print none). */
  date?: number;
}

/** Oldest runsc moat accepts: the Debian 13 build measured to run, checkpoint and restore here. */
export const MIN_RUNSC_DATE = 20240729;

/**
 * First release that detects the root netns by a file only the root netns has. Older ones test
 * /proc/sys/net/core/rmem_default, which Linux 6.x shows in every netns (see netns-patch.ts).
 */
export const NETNS_CHECK_FIXED_DATE = 20240801;

/** Parses `runsc --version` output; undefined when it is not runsc's. */
export function parseRunscVersion(output: string): RunscVersion | undefined {
  const match = /^runsc version (\S+)/m.exec(output);
  if (!match) return undefined;
  const raw = match[1]!;
  const date = /(?:^|[^0-9])(20\d{6})(?:[^0-9]|$)/.exec(raw);
  return date ? { raw, date: Number(date[1]) } : { raw };
}

/** Whether this runsc is new enough for moat. A version without a date (a source build) is accepted. */
export function isSupportedVersion(version: RunscVersion): boolean {
  return version.date === undefined || version.date >= MIN_RUNSC_DATE;
}

/** Whether this runsc has the root-netns misdetection; unknown (no date) counts as possibly. */
export function hasNetnsCheckBug(version: RunscVersion): boolean {
  return version.date === undefined || version.date < NETNS_CHECK_FIXED_DATE;
}
