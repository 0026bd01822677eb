import { existsSync } from "node:fs";
import { mkdir, open, readdir, readFile, rename, rm, stat, writeFile } from "node:fs/promises";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { CommandError, type Logger, runCommand } from "@moat/shared";
import { findOnPath, pathWithSbin, readJSON, removeTree } from "../host/files.js";
import { processAlive } from "../host/process.js";
import { type DebianMirror, findDebianMirror } from "./apt-sources.js";
import { BASE_DEFINITION, type BaseDefinition, definitionHash } from "./base-definition.js";
import { SetupError } from "./setup-error.js";

export interface BaseTemplate {
  templateID: "base";
  /** The root filesystem, to be used read-only (the lower layer of every sandbox's overlay). */
  rootfs: string;
  hash: string;
  builtAt: string;
  /** True when an existing build was used, false when this call built it. */
  reused: boolean;
}

export interface TemplateProgress {
  /** `wait`, `debootstrap`, `setup`, `finalize` or `cleanup`. */
  phase: string;
  message: string;
}

/** `template.json`, beside the rootfs. */
interface TemplateMetadata {
  templateID: "base";
  hash: string;
  builtAt: string;
  buildSeconds: number;
  mirror: string;
  definition: Omit<BaseDefinition, "setupScript">;
}

const BUILD_PREFIX = ".build-";
const LOCK_PREFIX = ".lock-";
/** How long to wait for another process building the same template before giving up. */
const LOCK_WAIT_MS = 30 * 60_000;

/** `<dataDir>/templates/base`: one directory per definition hash, each with rootfs/ and template.json. */
export function baseTemplateDir(dataDir: string): string {
  return path.join(dataDir, "templates", "base");
}

/**
 * The base template's root filesystem, built with debootstrap from the host's Debian mirror when
 * no build of the current definition exists (about a minute), reused otherwise. A build happens in
 * a temp dir renamed into `<dataDir>/templates/base/<hash>` only when complete, so an interrupted
 * build never leaves half a template; a lock file makes a second process wait for the first's
 * build instead of repeating it. Builds of older definitions are removed after a new one succeeds.
 */
export async function ensureBaseTemplate(opts: {
  dataDir: string;
  logger: Logger;
  onProgress?: (ev: TemplateProgress) => void;
}): Promise<BaseTemplate> {
  const hash = definitionHash(BASE_DEFINITION);
  const baseDir = baseTemplateDir(opts.dataDir);
  const existing = await readBuilt(baseDir, hash);
  if (existing) return existing;

  if (process.getuid?.() !== 0) {
    throw new SetupError("building the base template needs root (debootstrap, chroot)", "Run moat as root");
  }
  await mkdir(baseDir, { recursive: true });
  const release = await acquireLock(baseDir, hash, opts.onProgress);
  try {
    // The previous lock holder may have built it while we waited.
    const built = await readBuilt(baseDir, hash);
    if (built) return built;
    const template = await build(baseDir, hash, opts);
    await removeOldBuilds(baseDir, hash, opts);
    return template;
  } finally {
    await release();
  }
}

/** The built base template of the current definition, without building it; undefined if absent. */
export function findBaseTemplate(dataDir: string): Promise<BaseTemplate | undefined> {
  return readBuilt(baseTemplateDir(dataDir), definitionHash(BASE_DEFINITION));
}

async function readBuilt(baseDir: string, hash: string): Promise<BaseTemplate | undefined> {
  const dir = path.join(baseDir, hash);
  const meta = (await readJSON(path.join(dir, "template.json"))) as Partial<TemplateMetadata> | undefined;
  if (!meta || meta.hash !== hash || typeof meta.builtAt !== "string") return undefined;
  if (!existsSync(path.join(dir, "rootfs", "etc", "os-release"))) return undefined;
  return { templateID: "base", rootfs: path.join(dir, "rootfs"), hash, builtAt: meta.builtAt, reused: true };
}

async function build(
  baseDir: string,
  hash: string,
  opts: { logger: Logger; onProgress?: (ev: TemplateProgress) => void },
): Promise<BaseTemplate> {
  const { logger } = opts;
  const progress = (phase: string, message: string) => opts.onProgress?.({ phase, message });
  const started = performance.now();
  await reapStaleBuilds(baseDir);
  const debootstrap = await findOnPath("debootstrap");
  if (!debootstrap) {
    throw new SetupError("debootstrap is not installed", "Install it: apt-get install debootstrap");
  }
  const mirror = await findDebianMirror();
  const buildDir = path.join(baseDir, `${BUILD_PREFIX}${hash}-${process.pid}`);
  const rootfs = path.join(buildDir, "rootfs");
  if (existsSync(buildDir)) await removeTree(buildDir);
  await mkdir(buildDir);
  let renamed = false;
  try {
    const def = BASE_DEFINITION;
    logger.info({ hash, mirror: mirror.uri, suite: def.suite }, "building the base template");
    progress(
      "debootstrap",
      `debootstrap ${def.suite} (${def.variant}) from ${mirror.uri} (${mirror.origin})`,
    );
    await runDebootstrap(debootstrap, def, rootfs, mirror, baseDir, progress);

    progress("setup", "configuring the root filesystem");
    await runSetup(rootfs, def, mirror, progress);
    await checkRootfs(rootfs);

    progress("finalize", `moving the template into ${path.join(baseDir, hash)}`);
    const builtAt = new Date().toISOString();
    const { setupScript: _script, ...definition } = def;
    const meta: TemplateMetadata = {
      templateID: "base",
      hash,
      builtAt,
      buildSeconds: Math.round((performance.now() - started) / 100) / 10,
      mirror: mirror.uri,
      definition,
    };
    await writeFile(path.join(buildDir, "template.json"), `${JSON.stringify(meta, null, 2)}\n`);
    const finalDir = path.join(baseDir, hash);
    if (existsSync(finalDir)) {
      // A leftover without a valid template.json (readBuilt rejected it): replace it.
      await removeTree(finalDir);
    }
    await rename(buildDir, finalDir);
    renamed = true;
    logger.info({ hash, buildSeconds: meta.buildSeconds }, "base template built");
    return { templateID: "base", rootfs: path.join(finalDir, "rootfs"), hash, builtAt, reused: false };
  } finally {
    if (!renamed) await removeTree(buildDir).catch(() => undefined);
  }
}

async function runDebootstrap(
  debootstrap: string,
  def: BaseDefinition,
  rootfs: string,
  mirror: DebianMirror,
  baseDir: string,
  progress: (phase: string, message: string) => void,
): Promise<void> {
  const argv = [
    debootstrap,
    `--variant=${def.variant}`,
    `--components=${def.components.join(",")}`,
    `--include=${def.packages.join(",")}`,
    ...(mirror.signedBy ? [`--keyring=${mirror.signedBy}`] : []),
    def.suite,
    rootfs,
    mirror.uri,
  ];
  // debootstrap reports as `I: …`/`W: …`/`E: …` lines; each becomes a progress event.
  const lines = streamLines((line) => {
    if (/^[IWE]: /.test(line)) progress("debootstrap", line);
  });
  try {
    await runCommand(argv, {
      timeoutMs: 30 * 60_000,
      env: {
        ...process.env,
        PATH: pathWithSbin(),
        LANG: "C",
        LC_ALL: "C",
        DEBIAN_FRONTEND: "noninteractive",
      },
      onOutput: lines.push,
    });
    lines.flush();
  } catch (err) {
    lines.flush();
    // debootstrap's own log has the real cause; keep it, since the build dir is about to go.
    const log = await readFile(path.join(rootfs, "debootstrap", "debootstrap.log"), "utf8").catch(() => "");
    const saved = path.join(baseDir, "debootstrap-failure.log");
    if (log) await writeFile(saved, log).catch(() => undefined);
    const tail = log.trim().split("\n").slice(-15).join("\n");
    throw new SetupError(
      `debootstrap of ${def.suite} failed: ${(err as Error).message}${tail ? `\n${tail}` : ""}`,
      `Check that ${mirror.uri} (from ${mirror.origin}) is reachable${log ? `; debootstrap's log is in ${saved}` : ""}, then run \`moat setup\` again`,
      { cause: err },
    );
  }
}

async function runSetup(
  rootfs: string,
  def: BaseDefinition,
  mirror: DebianMirror,
  progress: (phase: string, message: string) => void,
): Promise<void> {
  const lines = streamLines((line) => progress("setup", line));
  try {
    await runCommand(["chroot", rootfs, "/bin/bash", "-c", def.setupScript], {
      timeoutMs: 10 * 60_000,
      env: {
        PATH: "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        HOME: "/root",
        LANG: "C.UTF-8",
        MOAT_MIRROR: mirror.uri,
        MOAT_SECURITY_MIRROR: mirror.securityURI ?? "",
      },
      onOutput: lines.push,
    });
    lines.flush();
  } catch (err) {
    lines.flush();
    const detail = err instanceof CommandError ? err.message : String(err);
    throw new SetupError(
      `the base template's setup script failed: ${detail}`,
      "This is a bug in moat's base-definition.ts; please report it with this output",
      { cause: err },
    );
  }
}

/** What sandboxes rely on; a build missing any of it must not be renamed into place. */
async function checkRootfs(rootfs: string): Promise<void> {
  const required = [
    "usr/bin/tini",
    "usr/bin/python3",
    "usr/bin/sudo",
    "bin/bash",
    "etc/sudoers.d/90-moat-user",
    "home/user",
    "opt/moat",
    "code",
  ];
  const missing = required.filter((rel) => !existsSync(path.join(rootfs, rel)));
  const home = await stat(path.join(rootfs, "home/user")).catch(() => undefined);
  if (missing.length > 0 || home?.uid !== 1000) {
    throw new SetupError(
      `the base template is incomplete (missing: ${missing.join(", ") || "none"}; /home/user uid ${home?.uid})`,
      "This is a bug in moat's base-definition.ts; please report it",
    );
  }
}

/**
 * An exclusive lock per definition hash: a file created with O_EXCL holding the owner's pid. A lock
 * whose owner died (a killed `moat setup`) is taken over.
 */
async function acquireLock(
  baseDir: string,
  hash: string,
  onProgress?: (ev: TemplateProgress) => void,
): Promise<() => Promise<void>> {
  const lockFile = path.join(baseDir, `${LOCK_PREFIX}${hash}`);
  const deadline = Date.now() + LOCK_WAIT_MS;
  let announced = false;
  for (;;) {
    try {
      const handle = await open(lockFile, "wx");
      await handle.writeFile(String(process.pid));
      await handle.close();
      return () => rm(lockFile, { force: true });
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "EEXIST") throw err;
    }
    const owner = Number((await readFile(lockFile, "utf8").catch(() => "")).trim());
    if (!Number.isInteger(owner) || owner <= 0 || !(await processAlive(owner))) {
      // Written by a process that is gone (or is being written right now: retry shortly).
      const age = Date.now() - ((await stat(lockFile).catch(() => undefined))?.mtimeMs ?? 0);
      if (owner > 0 || age > 5_000) await rm(lockFile, { force: true });
      await sleep(100);
      continue;
    }
    if (Date.now() > deadline) {
      throw new SetupError(
        `process ${owner} has been building the base template for over ${LOCK_WAIT_MS / 60_000} minutes`,
        `Wait for it or stop it, then run \`moat setup\` again (lock: ${lockFile})`,
      );
    }
    if (!announced) {
      onProgress?.({
        phase: "wait",
        message: `waiting for process ${owner}, which is building the base template`,
      });
      announced = true;
    }
    await sleep(1_000);
  }
}

/** Removes temp dirs of builds whose process died: they are never renamed into place. */
async function reapStaleBuilds(baseDir: string): Promise<void> {
  for (const name of await readdir(baseDir)) {
    const match = new RegExp(`^${BUILD_PREFIX}[0-9a-f]+-(\\d+)$`).exec(name);
    if (match && (Number(match[1]) === process.pid || !(await processAlive(Number(match[1]))))) {
      await removeTree(path.join(baseDir, name));
    }
  }
}

/**
 * Removes builds of other definitions. One still mounted (the lower layer of a running sandbox's
 * overlay) is kept: deleting files under a live overlay is undefined behaviour. A later setup
 * removes it once unused.
 */
async function removeOldBuilds(
  baseDir: string,
  keep: string,
  opts: { logger: Logger; onProgress?: (ev: TemplateProgress) => void },
): Promise<void> {
  const mountinfo = await readFile("/proc/self/mountinfo", "utf8");
  for (const name of await readdir(baseDir)) {
    if (name === keep || name.startsWith(".") || !/^[0-9a-f]{16}$/.test(name)) continue;
    const dir = path.join(baseDir, name);
    if (mountinfo.includes(`${dir}/`)) {
      opts.logger.info({ dir }, "keeping an old base template that a mount still uses");
      continue;
    }
    opts.onProgress?.({ phase: "cleanup", message: `removing the old base template ${name}` });
    await removeTree(dir);
  }
}

/** Turns a command's stdout and stderr chunks into whole lines, each stream on its own. */
function streamLines(onLine: (line: string) => void): {
  push: (chunk: string, stream: "stdout" | "stderr") => void;
  flush: () => void;
} {
  const rest = { stdout: "", stderr: "" };
  return {
    push: (chunk, stream) => {
      const parts = (rest[stream] + chunk).split("\n");
      rest[stream] = parts.pop() ?? "";
      for (const part of parts) if (part.trim()) onLine(part.trimEnd());
    },
    flush: () => {
      for (const stream of ["stdout", "stderr"] as const) {
        if (rest[stream].trim()) onLine(rest[stream].trimEnd());
        rest[stream] = "";
      }
    },
  };
}
