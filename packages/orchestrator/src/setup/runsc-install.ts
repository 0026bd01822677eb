import { createHash } from "node:crypto";
import { constants } from "node:fs";
import { access, mkdir, readdir, readFile, rm, stat } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { type Logger, runCommand } from "@moat/shared";
import { findOnPath, readJSON, writeFileAtomic } from "../host/files.js";
import { findDebianMirror } from "./apt-sources.js";
import { readSetupConfig, type SetupConfig } from "./config.js";
import { DOWNLOADED_RUNSC, downloadDebianRunsc, RUNSC_SUITE } from "./debian-download.js";
import { findIdleMonitorSleeps, patchIdleMonitor } from "./idle-patch.js";
import { patchRunscNetnsCheck } from "./netns-patch.js";
import { probeNetns } from "./netns-probe.js";
import {
  hasNetnsCheckBug,
  isSupportedVersion,
  MIN_RUNSC_DATE,
  NETNS_CHECK_FIXED_DATE,
  parseRunscVersion,
  type RunscVersion,
} from "./runsc-version.js";
import { SetupError } from "./setup-error.js";
import { smokeTestRunsc } from "./smoke-test.js";

/** The runsc moat runs sandboxes with, as decided (and cached) by ensureRunsc. */
export interface RunscInstall {
  /** The binary to execute: the found one, or moat's patched copy of it. */
  path: string;
  /** As runsc prints it, e.g. `0.0~20240729.0` or `release-20240807.0`. */
  version: string;
  /** `path`: MOAT_RUNSC or a runsc on PATH; `debian-trixie`: downloaded by moat. */
  source: "path" | "debian-trixie";
  /** How the root-netns misdetection of runsc < 20240801 is handled on this host. */
  netnsFix: "not-needed" | "patched-binary";
  /**
   * systrap's monitor that wakes every 400 µs even in an idle sandbox (idle-patch.ts): slowed down
   * in the patched copy, or not found in this binary (another build, or a runsc that fixed it).
   */
  idleFix: "patched-binary" | "not-found";
  /** `kvm` hangs on hosts with nested KVM; systrap needs no hardware support. */
  platform: "systrap";
}

export const RUNSC_PLATFORM = "systrap";

/** What ensureRunsc caches in `<dataDir>/runtime/runsc.json`. */
interface InstallRecord {
  schema: typeof RECORD_SCHEMA;
  /** The candidates and kernel the decision was made for; any change re-runs it. */
  fingerprint: string;
  /** The binary that was found or downloaded (before patching). */
  origin: string;
  install: RunscInstall;
  checkedAt: string;
  smokeMs: number;
}

/** 2: the idle monitor patch (copies made under schema 1 lack it). */
const RECORD_SCHEMA = 2;
const RECORD_FILE = "runsc.json";
const PATCHED_PREFIX = "runsc-patched-";
/** Schema 1's name for the copy, removed once a new one is in place. */
const OLD_PATCHED_PREFIX = "runsc-netns-patched-";

/** Where runsc, its patched copy and the install record live. */
export function runtimeDir(dataDir: string): string {
  return path.join(dataDir, "runtime");
}

interface Candidate {
  path: string;
  source: RunscInstall["source"];
  /** How it was found, for messages. */
  from: "MOAT_RUNSC" | "PATH" | "download";
}

/**
 * Finds, checks and caches the runsc to use. In order: `MOAT_RUNSC` (an explicit choice, used or
 * rejected, never skipped), a runsc on PATH that is new enough, a runsc moat downloaded earlier,
 * else one downloaded now from Debian trixie (with `allowDownload`, the default). Then it detects
 * the root-netns misdetection (design.md) and, when this runsc has it, uses a patched private copy;
 * and it runs a smoke sandbox with the chosen binary before trusting it.
 *
 * The decision is cached in `<dataDir>/runtime/runsc.json`, keyed by the candidates' identity and
 * the kernel release, so a later call is a few stat calls. Files are written to temp names and
 * renamed, so concurrent calls are safe and an interrupted one leaves nothing half-written.
 */
export async function ensureRunsc(opts: {
  dataDir: string;
  logger: Logger;
  onProgress?: (msg: string) => void;
  /** When false, fail instead of downloading (moat doctor). */
  allowDownload?: boolean;
  /** MOAT_RUNSC and MOAT_DEBIAN_MIRROR (default: readSetupConfig()). */
  setup?: SetupConfig;
}): Promise<RunscInstall> {
  const { logger } = opts;
  const setup = opts.setup ?? readSetupConfig();
  requireRoot();
  const dir = runtimeDir(opts.dataDir);
  const candidates = await findCandidates(opts.dataDir, setup.runsc);
  const record = await readRecord(dir);
  if (record && record.fingerprint === (await fingerprint(candidates, dir))) {
    const install = { ...record.install, path: path.resolve(dir, record.install.path) };
    if (await isExecutable(install.path)) return install;
  }

  await mkdir(dir, { recursive: true });
  let chosen = await chooseCandidate(candidates, logger, opts.onProgress);
  if (!chosen) {
    if (opts.allowDownload === false) {
      throw new SetupError(
        "no usable runsc (MOAT_RUNSC is unset, none on PATH is new enough, none was downloaded)",
        "Run `moat setup`, which downloads Debian trixie's runsc, or install gVisor and set MOAT_RUNSC",
      );
    }
    const mirror = await findDebianMirror(undefined, setup.debianMirror);
    const deb = await downloadDebianRunsc({ runtimeDir: dir, mirror, logger, onProgress: opts.onProgress });
    const downloaded: Candidate = {
      path: path.join(dir, DOWNLOADED_RUNSC),
      source: "debian-trixie",
      from: "download",
    };
    const version = await runscVersion(downloaded.path);
    if (!version) throw new SetupError(`${deb} unpacked a runsc that does not run`, installHint());
    chosen = { candidate: downloaded, version };
  }
  const { candidate, version } = chosen;

  opts.onProgress?.("checking how this kernel shows /proc/sys/net in a network namespace");
  const probe = await probeNetns();
  const original = await readFile(candidate.path);
  const wanted: Patches = {
    netns: probe.rootProbeLeaks && hasNetnsCheckBug(version),
    idle: findIdleMonitorSleeps(original).length === 1,
  };
  if (wanted.netns) {
    logger.info(
      { version: version.raw },
      "runsc misdetects every netns as the root one here; patching a copy",
    );
  }
  const hash = createHash("sha256").update(original).digest("hex").slice(0, 16);
  const copy = (patches: Patches) =>
    writePatchedCopy({ original, hash, originalPath: candidate.path, version, dir, patches, probe });

  opts.onProgress?.(`smoke-testing runsc ${version.raw} (platform ${RUNSC_PLATFORM})`);
  let binary = await copy(wanted);
  let smoke = await smokeTestRunsc({ binary, runtimeDir: dir, platform: RUNSC_PLATFORM });
  if (!smoke.ok && smoke.netnsMisdetected && !wanted.netns) {
    // The version or the probe said no fix was needed, but runsc itself says otherwise.
    logger.warn({ version: version.raw }, "runsc refused a fresh netns as the root one; patching a copy");
    wanted.netns = true;
    binary = await copy(wanted);
    smoke = await smokeTestRunsc({ binary, runtimeDir: dir, platform: RUNSC_PLATFORM });
  }
  if (!smoke.ok && wanted.idle) {
    // The idle patch changes one constant; should a build ever disagree, run without it.
    logger.warn(
      { version: version.raw, error: smoke.message },
      "runsc failed with the idle patch; trying without",
    );
    wanted.idle = false;
    binary = await copy(wanted);
    smoke = await smokeTestRunsc({ binary, runtimeDir: dir, platform: RUNSC_PLATFORM });
  }
  if (!smoke.ok) {
    throw new SetupError(
      `runsc ${version.raw} (${binary}) failed its smoke test: ${smoke.message}`,
      installHint(),
    );
  }

  const install: RunscInstall = {
    path: binary,
    version: version.raw,
    source: candidate.source,
    netnsFix: wanted.netns ? "patched-binary" : "not-needed",
    idleFix: wanted.idle ? "patched-binary" : "not-found",
    platform: RUNSC_PLATFORM,
  };
  const fresh: InstallRecord = {
    schema: RECORD_SCHEMA,
    // Recomputed: a download just added a candidate.
    fingerprint: await fingerprint(await findCandidates(opts.dataDir, setup.runsc), dir),
    origin: inRuntimeDir(candidate.path, dir),
    install: { ...install, path: inRuntimeDir(install.path, dir) },
    checkedAt: new Date().toISOString(),
    smokeMs: smoke.ms,
  };
  await writeFileAtomic(path.join(dir, RECORD_FILE), `${JSON.stringify(fresh, null, 2)}\n`);
  await removeOtherPatchedCopies(dir, binary);
  logger.info({ ...install, smokeMs: smoke.ms }, "runsc ready");
  return install;
}

/** The cached install, without checking it (for reports); undefined before the first setup. */
export async function readRunscInstall(dataDir: string): Promise<RunscInstall | undefined> {
  const dir = runtimeDir(dataDir);
  const install = (await readRecord(dir))?.install;
  return install && { ...install, path: path.resolve(dir, install.path) };
}

/** `runsc --version` of a binary; undefined when it does not run or does not look like runsc. */
export async function runscVersion(binary: string): Promise<RunscVersion | undefined> {
  try {
    const { stdout } = await runCommand([binary, "--version"], { timeoutMs: 10_000 });
    return parseRunscVersion(stdout);
  } catch {
    return undefined;
  }
}

function requireRoot(): void {
  if (process.getuid?.() !== 0) {
    throw new SetupError("runsc needs root to create sandboxes", "Run moat as root (e.g. with sudo)");
  }
}

function installHint(): string {
  return `Install gVisor ${NETNS_CHECK_FIXED_DATE} or newer (https://gvisor.dev/docs/user_guide/install/) and set MOAT_RUNSC to its runsc`;
}

/** `explicit`: MOAT_RUNSC. */
async function findCandidates(dataDir: string, explicit: string | undefined): Promise<Candidate[]> {
  if (explicit) {
    const resolved = path.resolve(explicit);
    if (!(await isExecutable(resolved))) {
      throw new SetupError(
        `MOAT_RUNSC=${explicit} is not an executable file`,
        "Point MOAT_RUNSC at a runsc binary, or unset it to let moat find or download one",
      );
    }
    return [{ path: resolved, source: "path", from: "MOAT_RUNSC" }];
  }
  const candidates: Candidate[] = [];
  const onPath = await findOnPath("runsc");
  if (onPath) candidates.push({ path: onPath, source: "path", from: "PATH" });
  const downloaded = path.join(runtimeDir(dataDir), DOWNLOADED_RUNSC);
  if (await isExecutable(downloaded))
    candidates.push({ path: downloaded, source: "debian-trixie", from: "download" });
  return candidates;
}

/** The first candidate that runs and is new enough; MOAT_RUNSC failing either is an error. */
async function chooseCandidate(
  candidates: Candidate[],
  logger: Logger,
  onProgress?: (msg: string) => void,
): Promise<{ candidate: Candidate; version: RunscVersion } | undefined> {
  for (const candidate of candidates) {
    const version = await runscVersion(candidate.path);
    const problem = !version
      ? "does not run `runsc --version`"
      : !isSupportedVersion(version)
        ? `is ${version.raw}, older than ${MIN_RUNSC_DATE}`
        : undefined;
    if (!problem && version) return { candidate, version };
    if (candidate.from === "MOAT_RUNSC") {
      throw new SetupError(`MOAT_RUNSC=${candidate.path} ${problem}`, installHint());
    }
    logger.warn({ path: candidate.path, problem }, "skipping this runsc");
    onProgress?.(`${candidate.path} ${problem}; falling back to Debian ${RUNSC_SUITE}'s runsc`);
  }
  return undefined;
}

interface Patches {
  /** The root-netns check (netns-patch.ts). */
  netns: boolean;
  /** The idle monitor's period (idle-patch.ts). */
  idle: boolean;
}

/**
 * Writes `<runtimeDir>/runsc-patched-<hash of original>-<patches>`, reusing it when already there,
 * or returns the original when no patch is wanted. Throws when the netns patch cannot work here:
 * the binary has no such check, or the replacement file is not root-netns-only on this kernel.
 */
async function writePatchedCopy(opts: {
  original: Buffer;
  /** Of the original, naming its copies. */
  hash: string;
  originalPath: string;
  version: RunscVersion;
  dir: string;
  patches: Patches;
  probe: { patchedProbeWorks: boolean };
}): Promise<string> {
  const { version, patches } = opts;
  if (!patches.netns && !patches.idle) return opts.originalPath;
  if (patches.netns && !opts.probe.patchedProbeWorks) {
    throw new SetupError(
      `runsc ${version.raw} misdetects every netns as the root one on this kernel, and moat's binary patch relies on /proc/sys/net/core/dev_weight being root-netns-only, which it is not here`,
      installHint(),
    );
  }
  const names = [patches.netns && "netns", patches.idle && "idle"].filter(Boolean).join("-");
  const target = path.join(opts.dir, `${PATCHED_PREFIX}${opts.hash}-${names}`);
  if (await isExecutable(target)) return target;
  let patched = opts.original;
  if (patches.netns) {
    const netns = patchRunscNetnsCheck(patched);
    if (netns.count === 0) {
      throw new SetupError(
        `runsc ${version.raw} (${opts.originalPath}) misdetects the root netns but has no check moat knows how to patch`,
        installHint(),
      );
    }
    patched = netns.patched;
  }
  if (patches.idle) patched = patchIdleMonitor(patched) ?? patched;
  await writeFileAtomic(target, patched, 0o755);
  return target;
}

async function removeOtherPatchedCopies(dir: string, keep: string): Promise<void> {
  for (const name of await readdir(dir)) {
    const patchedCopy = name.startsWith(PATCHED_PREFIX) || name.startsWith(OLD_PATCHED_PREFIX);
    if (patchedCopy && path.join(dir, name) !== keep) {
      // A running runsc keeps its inode; unlinking the file does not disturb it.
      await rm(path.join(dir, name), { force: true });
    }
  }
}

/**
 * Paths inside the runtime directory are kept relative to it, so that the record stays true for
 * any data directory that reaches the same runtime directory (tests link one shared cache).
 */
function inRuntimeDir(file: string, dir: string): string {
  const relative = path.relative(dir, file);
  return relative.startsWith("..") || path.isAbsolute(relative) ? file : relative;
}

/** Identity of everything the decision depends on: the candidates' files and the kernel. */
async function fingerprint(candidates: Candidate[], dir: string): Promise<string> {
  const parts: unknown[] = [RECORD_SCHEMA, os.release(), RUNSC_PLATFORM];
  for (const candidate of candidates) {
    const st = await stat(candidate.path).catch(() => undefined);
    parts.push([candidate.from, inRuntimeDir(candidate.path, dir), st?.ino, st?.size, st?.mtimeMs]);
  }
  return createHash("sha256").update(JSON.stringify(parts)).digest("hex");
}

async function readRecord(dir: string): Promise<InstallRecord | undefined> {
  const value = await readJSON(path.join(dir, RECORD_FILE));
  if (typeof value !== "object" || value === null) return undefined;
  const record = value as Partial<InstallRecord>;
  if (record.schema !== RECORD_SCHEMA || typeof record.fingerprint !== "string" || !record.install)
    return undefined;
  return record as InstallRecord;
}

async function isExecutable(file: string): Promise<boolean> {
  try {
    await access(file, constants.X_OK);
    return (await stat(file)).isFile();
  } catch {
    return false;
  }
}
