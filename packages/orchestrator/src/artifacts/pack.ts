/**
 * Directories (template layers, snapshots' upper layers and memory images) as one file for shared
 * storage: a zstd-compressed POSIX tar made by GNU tar, with numeric owners, modes, sparse files
 * (sparse 1.0: holes stay holes) and the extended attributes overlay layers carry (whiteouts are
 * 0/0 character devices, opaque directories an xattr).
 *
 * Unpacking treats the archive as hostile even though its checksum matched (shared storage is
 * less trusted than the node's disk, and a layer is mounted into tenants' sandboxes): it is listed
 * first and refused whole when an entry has an absolute path or `..`, passes through a symbolic
 * link of the archive, is a device (but a whiteout), or is a hard link out of the archive. Then it
 * is extracted into a directory that did not exist, and only the xattrs a layer needs come along.
 */
import { mkdir, rm } from "node:fs/promises";
import path from "node:path";
import { runCommand } from "@moat/shared";

/** Packing or unpacking a big layer takes a while; hung ones must still end. */
const TAR_TIMEOUT_MS = 30 * 60_000;
const CREATE_FLAGS = ["--format=posix", "--sparse", "--xattrs", "--xattrs-include=*", "--numeric-owner"];
/** Only what overlay layers need: opaque directories, file capabilities and users' own xattrs. */
const EXTRACT_XATTRS = [
  "--xattrs",
  "--xattrs-include=trusted.overlay.opaque",
  "--xattrs-include=security.capability",
  "--xattrs-include=user.*",
];

export class ArchiveError extends Error {
  constructor(archive: string, why: string) {
    super(`archive ${path.basename(archive)} refused: ${why}`);
    this.name = "ArchiveError";
  }
}

/** Packs everything under `dir` (owners, modes, xattrs, sparse files, hard links) into `archive`. */
export async function packDirectory(dir: string, archive: string): Promise<void> {
  await runCommand(["tar", "--create", "--zstd", `--file=${archive}`, ...CREATE_FLAGS, "-C", dir, "."], {
    timeoutMs: TAR_TIMEOUT_MS,
  });
}

export interface ArchiveEntry {
  type: string;
  path: string;
  /** A symbolic link's target, or a hard link's (an earlier entry). */
  target?: string;
}

/** Lists `archive` and throws ArchiveError unless every entry is safe to extract (see above). */
export async function checkArchive(archive: string): Promise<ArchiveEntry[]> {
  const { stdout } = await runCommand(
    // --absolute-names: every name exactly as the archive holds it, whatever tar would do on extraction.
    [
      "tar",
      "--list",
      "--verbose",
      "--absolute-names",
      "--zstd",
      "--numeric-owner",
      "--quoting-style=c",
      `--file=${archive}`,
    ],
    { timeoutMs: TAR_TIMEOUT_MS },
  );
  const entries: ArchiveEntry[] = [];
  const links = new Set<string>();
  const seen = new Set<string>();
  for (const line of stdout.split("\n")) {
    if (!line) continue;
    const entry = parseListing(line);
    if (!entry) throw new ArchiveError(archive, `cannot read the listing line ${JSON.stringify(line)}`);
    const name = normalize(archive, entry.path);
    const parts = name.split("/");
    for (let i = 1; i < parts.length; i++) {
      if (links.has(parts.slice(0, i).join("/"))) {
        throw new ArchiveError(archive, `${entry.path} is under a symbolic link of the archive`);
      }
    }
    switch (entry.type) {
      case "-":
      case "d":
      case "p":
        break;
      case "l":
        links.add(name);
        break;
      case "h": {
        const target = normalize(archive, entry.target ?? "");
        if (!seen.has(target))
          throw new ArchiveError(
            archive,
            `${entry.path} is a hard link to ${entry.target}, outside the archive`,
          );
        break;
      }
      case "c":
        if (entry.device !== "0,0")
          throw new ArchiveError(archive, `${entry.path} is a device (${entry.device})`);
        break;
      default:
        throw new ArchiveError(archive, `${entry.path} is of a kind layers never hold ('${entry.type}')`);
    }
    seen.add(name);
    entries.push({
      type: entry.type,
      path: name,
      ...(entry.target !== undefined ? { target: entry.target } : {}),
    });
  }
  return entries;
}

/** Checks `archive`, then extracts it into `target`, which must not exist yet. */
export async function unpackArchive(archive: string, target: string): Promise<void> {
  await checkArchive(archive);
  await mkdir(path.dirname(target), { recursive: true });
  await mkdir(target, { mode: 0o700 });
  try {
    await runCommand(
      [
        "tar",
        "--extract",
        "--zstd",
        `--file=${archive}`,
        "--numeric-owner",
        "--same-owner",
        "--same-permissions",
        ...EXTRACT_XATTRS,
        "-C",
        target,
      ],
      { timeoutMs: TAR_TIMEOUT_MS },
    );
  } catch (err) {
    await rm(target, { recursive: true, force: true });
    throw err;
  }
}

interface Listed {
  type: string;
  path: string;
  target?: string;
  /** "major,minor" of a device. */
  device?: string;
}

const QUOTED = String.raw`"((?:[^"\\]|\\.)*)"`;
const LISTING = new RegExp(
  String.raw`^(.)\S{9}\S*\s+\d+/\d+\s+(\d+,\d+|\d+)\s+\S+\s+\S+\s+${QUOTED}(?:\s+(->|link to)\s+${QUOTED})?$`,
);

/** One line of `tar -tv --quoting-style=c`. */
export function parseListing(line: string): Listed | undefined {
  const m = LISTING.exec(line);
  if (!m) return undefined;
  const [, type = "", size = "", name = "", , target] = m;
  return {
    type,
    path: unquote(name),
    ...(target !== undefined ? { target: unquote(target) } : {}),
    ...(size.includes(",") ? { device: size } : {}),
  };
}

function unquote(text: string): string {
  const bytes: number[] = [];
  const simple: Record<string, number> = {
    a: 7,
    b: 8,
    f: 12,
    n: 10,
    r: 13,
    t: 9,
    v: 11,
    "\\": 92,
    '"': 34,
    "?": 63,
  };
  for (let i = 0; i < text.length; i++) {
    const c = text[i]!;
    if (c !== "\\") {
      bytes.push(...Buffer.from(c));
      continue;
    }
    const next = text[i + 1] ?? "";
    const octal = /^[0-7]{3}/.exec(text.slice(i + 1));
    if (octal) {
      bytes.push(Number.parseInt(octal[0], 8));
      i += 3;
    } else {
      bytes.push(simple[next] ?? next.charCodeAt(0));
      i += 1;
    }
  }
  return Buffer.from(bytes).toString("utf8");
}

/** An entry's path relative to the archive's root ("" for the root), or ArchiveError. */
function normalize(archive: string, name: string): string {
  if (name.startsWith("/")) throw new ArchiveError(archive, `${name} is an absolute path`);
  const parts = name.split("/").filter((p) => p !== "" && p !== ".");
  if (parts.includes("..")) throw new ArchiveError(archive, `${name} leads out of the archive ('..')`);
  if (name.includes("\0")) throw new ArchiveError(archive, `${JSON.stringify(name)} holds a NUL`);
  return parts.join("/");
}
