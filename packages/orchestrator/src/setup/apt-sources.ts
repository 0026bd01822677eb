import { readdir, readFile } from "node:fs/promises";
import path from "node:path";
import { readSetupConfig } from "./config.js";
import { SetupError } from "./setup-error.js";

/**
 * The Debian mirror the host's own apt uses. moat fetches from it (runsc from trixie, the base
 * template from bookworm) so that a machine behind a local mirror or proxy keeps working, and so that
 * no mirror is hard-coded. `MOAT_DEBIAN_MIRROR` overrides it, e.g. on a non-Debian host.
 */
export interface DebianMirror {
  /** URI of the main archive, without a trailing slash (e.g. http://deb.debian.org/debian). */
  uri: string;
  /** URI of the security archive when the host has one (e.g. http://deb.debian.org/debian-security). */
  securityURI?: string;
  /** Keyring that signs it, when the source names one (`Signed-By`). */
  signedBy?: string;
  /** Where it was read from: a file path or `MOAT_DEBIAN_MIRROR`. */
  origin: string;
}

/** One `deb` entry of an apt sources file. */
export interface AptSource {
  uris: string[];
  suites: string[];
  components: string[];
  signedBy?: string;
  origin: string;
}

/** Suites of Debian (not Ubuntu or derivatives): a host on another distribution has no Debian mirror. */
const DEBIAN_SUITE =
  /^(buster|bullseye|bookworm|trixie|forky|duke|sid|stable|oldstable|oldoldstable|testing|unstable|experimental)(-updates|-backports|-security|-proposed-updates)?$/;

/** Schemes debootstrap and a plain apt-get can fetch from (not cdrom:, mirror+file:, tor+http:). */
const FETCHABLE = /^(https?|file|ftp):\/\//;

/** Parses a deb822 `.sources` file (stanzas of `Field: value` separated by blank lines). */
export function parseDeb822Sources(text: string, origin: string): AptSource[] {
  const sources: AptSource[] = [];
  for (const stanza of text.split(/\n[ \t]*\n/)) {
    const fields = new Map<string, string>();
    let current: string | undefined;
    for (const line of stanza.split("\n")) {
      if (line.startsWith("#")) continue;
      if (/^[ \t]/.test(line)) {
        // A continuation line (multi-line fields such as an inline Signed-By key).
        if (current) fields.set(current, `${fields.get(current) ?? ""}\n${line.trim()}`);
        continue;
      }
      const match = /^([A-Za-z0-9-]+):(.*)$/.exec(line);
      if (!match) continue;
      current = match[1]!.toLowerCase();
      fields.set(current, match[2]!.trim());
    }
    const words = (name: string) => (fields.get(name) ?? "").split(/\s+/).filter(Boolean);
    if (!words("types").includes("deb")) continue;
    if (/^(no|false|0)$/i.test(fields.get("enabled") ?? "")) continue;
    const signedBy = fields.get("signed-by");
    sources.push({
      uris: words("uris").map(trimSlash),
      suites: words("suites"),
      components: words("components"),
      // Only a keyring path is useful to us; an inline key block is skipped.
      signedBy: signedBy && !signedBy.includes("\n") && signedBy.startsWith("/") ? signedBy : undefined,
      origin,
    });
  }
  return sources;
}

/** Parses a one-line-style `sources.list` (`deb [options] uri suite components…`). */
export function parseOneLineSources(text: string, origin: string): AptSource[] {
  const sources: AptSource[] = [];
  for (const raw of text.split("\n")) {
    const line = raw.replace(/#.*$/, "").trim();
    const match = /^deb\s+(?:\[([^\]]*)\]\s+)?(\S+)\s+(\S+)(.*)$/.exec(line);
    if (!match) continue;
    const options = new Map(
      (match[1] ?? "")
        .split(/\s+/)
        .filter(Boolean)
        .map((opt) => {
          const [key, value = ""] = opt.split("=");
          return [key!.toLowerCase(), value] as const;
        }),
    );
    sources.push({
      uris: [trimSlash(match[2]!)],
      suites: [match[3]!],
      components: match[4]!.split(/\s+/).filter(Boolean),
      signedBy: options.get("signed-by") || undefined,
      origin,
    });
  }
  return sources;
}

/** The first fetchable Debian archive among `sources`, and its security archive if listed. */
export function pickDebianMirror(sources: AptSource[]): DebianMirror | undefined {
  const debian = (source: AptSource, security: boolean) =>
    source.components.includes("main") &&
    source.suites.some((suite) => {
      const match = DEBIAN_SUITE.exec(suite);
      return match !== null && (match[2] === "-security") === security;
    });
  const main = sources.find((s) => debian(s, false) && s.uris.some((u) => FETCHABLE.test(u)));
  if (!main) return undefined;
  const security = sources.find((s) => debian(s, true) && s.uris.some((u) => FETCHABLE.test(u)));
  return {
    uri: main.uris.find((u) => FETCHABLE.test(u))!,
    securityURI: security?.uris.find((u) => FETCHABLE.test(u)),
    signedBy: main.signedBy,
    origin: main.origin,
  };
}

/** Every `deb` entry apt reads on this host: debian.sources and sources.list first, then the rest. */
export async function readAptSources(etcApt = "/etc/apt"): Promise<AptSource[]> {
  const partsDir = path.join(etcApt, "sources.list.d");
  const parts = (await readdir(partsDir).catch(() => [] as string[]))
    .filter((name) => name.endsWith(".sources") || name.endsWith(".list"))
    .sort()
    .map((name) => path.join(partsDir, name));
  const files = [path.join(partsDir, "debian.sources"), path.join(etcApt, "sources.list"), ...parts];
  const sources: AptSource[] = [];
  for (const file of new Set(files)) {
    const text = await readFile(file, "utf8").catch(() => undefined);
    if (text === undefined) continue;
    sources.push(
      ...(file.endsWith(".sources") ? parseDeb822Sources(text, file) : parseOneLineSources(text, file)),
    );
  }
  return sources;
}

/**
 * The host's Debian mirror (see DebianMirror), or `override` (MOAT_DEBIAN_MIRROR); throws a
 * SetupError saying how to name one.
 */
export async function findDebianMirror(
  etcApt = "/etc/apt",
  override = readSetupConfig().debianMirror,
): Promise<DebianMirror> {
  if (override) {
    if (!FETCHABLE.test(override)) {
      throw new SetupError(
        `MOAT_DEBIAN_MIRROR=${override} is not an http(s), ftp or file URI`,
        "Set it to a Debian archive such as http://<your-mirror>/debian",
      );
    }
    return { uri: trimSlash(override), origin: "MOAT_DEBIAN_MIRROR" };
  }
  const mirror = pickDebianMirror(await readAptSources(etcApt));
  if (!mirror) {
    throw new SetupError(
      `found no Debian archive (suite such as bookworm, component main) in ${etcApt}/sources.list or ${etcApt}/sources.list.d`,
      "Run moat on Debian, or set MOAT_DEBIAN_MIRROR to a Debian archive such as http://<your-mirror>/debian",
    );
  }
  return mirror;
}

function trimSlash(uri: string): string {
  return uri.replace(/\/+$/, "");
}
