import { existsSync } from "node:fs";
import { mkdir, mkdtemp, readdir, rename, rm, writeFile } from "node:fs/promises";
import path from "node:path";
import { type Logger, runCommand } from "@moat/shared";
import { pathWithSbin } from "../host/files.js";
import { processAlive } from "../host/process.js";
import type { DebianMirror } from "./apt-sources.js";
import { SetupError } from "./setup-error.js";

/** The Debian suite whose runsc moat downloads: Debian 12's (20221219) is too old. */
export const RUNSC_SUITE = "trixie";

/** Directory (under the runtime dir) holding the unpacked package; the binary is usr/bin/runsc in it. */
export const DOWNLOAD_DIR_NAME = "debian-trixie";
export const DOWNLOADED_RUNSC = path.join(DOWNLOAD_DIR_NAME, "usr", "bin", "runsc");

const TEMP_PREFIX = ".download-";

/**
 * Downloads runsc from Debian trixie through apt with a private sources list, lists dir and cache,
 * so the host's apt configuration and state are never touched, and unpacks it with `dpkg -x`. The
 * unpacked tree is renamed into `<runtimeDir>/debian-trixie` in one step, so a concurrent or
 * interrupted download never leaves half a package there. Returns the .deb's file name.
 */
export async function downloadDebianRunsc(opts: {
  runtimeDir: string;
  mirror: DebianMirror;
  logger: Logger;
  onProgress?: (msg: string) => void;
}): Promise<string> {
  const { runtimeDir, mirror } = opts;
  await mkdir(runtimeDir, { recursive: true });
  await reapStaleDownloads(runtimeDir);
  const tmp = await mkdtemp(path.join(runtimeDir, `${TEMP_PREFIX}${process.pid}-`));
  try {
    const sourcesList = path.join(tmp, "sources.list");
    const keyring = mirror.signedBy ?? "/usr/share/keyrings/debian-archive-keyring.gpg";
    const options = existsSync(keyring) ? `[signed-by=${keyring}] ` : "";
    await writeFile(sourcesList, `deb ${options}${mirror.uri} ${RUNSC_SUITE} main\n`);
    for (const dir of ["lists/partial", "cache/archives/partial", "deb"]) {
      await mkdir(path.join(tmp, dir), { recursive: true });
    }
    const aptOptions = [
      `Dir::Etc::SourceList=${sourcesList}`,
      "Dir::Etc::SourceParts=/dev/null",
      // The host's pinning (e.g. trixie at -1) must not hide trixie's runsc from this private apt.
      "Dir::Etc::Preferences=/dev/null",
      "Dir::Etc::PreferencesParts=/dev/null",
      `Dir::State::Lists=${path.join(tmp, "lists")}`,
      `Dir::Cache=${path.join(tmp, "cache")}`,
      `Dir::Cache::Archives=${path.join(tmp, "cache", "archives")}`,
      // Files in our temp dir are root's; apt's _apt sandbox user could not write them.
      "APT::Sandbox::User=root",
      // snapshot.debian.org serves Release files that are past their Valid-Until on purpose.
      ...(mirror.uri.includes("snapshot.debian.org") ? ["Acquire::Check-Valid-Until=false"] : []),
    ].flatMap((o) => ["-o", o]);
    const env = { ...process.env, PATH: pathWithSbin(), DEBIAN_FRONTEND: "noninteractive", LC_ALL: "C" };
    opts.onProgress?.(`fetching the ${RUNSC_SUITE} package index from ${mirror.uri}`);
    const hint = `Check that ${mirror.uri} (from ${mirror.origin}) is reachable and carries ${RUNSC_SUITE}, or install gVisor (https://gvisor.dev/docs/user_guide/install/) and set MOAT_RUNSC to its runsc`;
    try {
      await runCommand(["apt-get", "-q", ...aptOptions, "update"], { timeoutMs: 5 * 60_000, env });
      opts.onProgress?.(`downloading runsc from ${RUNSC_SUITE}`);
      await runCommand(["apt-get", "-q", ...aptOptions, "download", "runsc"], {
        timeoutMs: 5 * 60_000,
        env,
        cwd: path.join(tmp, "deb"),
      });
    } catch (err) {
      throw new SetupError(
        `could not download runsc from Debian ${RUNSC_SUITE}: ${(err as Error).message}`,
        hint,
        {
          cause: err,
        },
      );
    }
    const debs = (await readdir(path.join(tmp, "deb"))).filter((f) => f.endsWith(".deb"));
    if (debs.length !== 1)
      throw new SetupError(`apt-get download runsc produced ${debs.length} .deb files`, hint);
    const deb = debs[0]!;
    const extract = path.join(tmp, "extract");
    await runCommand(["dpkg", "-x", path.join(tmp, "deb", deb), extract], { timeoutMs: 60_000, env });
    if (!existsSync(path.join(extract, "usr", "bin", "runsc"))) {
      throw new SetupError(`${deb} has no usr/bin/runsc`, hint);
    }
    try {
      await rename(extract, path.join(runtimeDir, DOWNLOAD_DIR_NAME));
    } catch (err) {
      // Another process finished the same download first: its copy is as good as ours.
      const code = (err as NodeJS.ErrnoException).code;
      if (code !== "ENOTEMPTY" && code !== "EEXIST") throw err;
      opts.logger.debug({ runtimeDir }, "runsc download raced with another process; using its copy");
    }
    opts.logger.info({ deb, mirror: mirror.uri }, "downloaded runsc");
    return deb;
  } finally {
    await rm(tmp, { recursive: true, force: true });
  }
}

/** Removes temp dirs of downloads whose process died (they are never renamed into place). */
async function reapStaleDownloads(runtimeDir: string): Promise<void> {
  for (const name of await readdir(runtimeDir)) {
    const match = new RegExp(`^${TEMP_PREFIX}(\\d+)-`).exec(name);
    if (match && !(await processAlive(Number(match[1])))) {
      await rm(path.join(runtimeDir, name), { recursive: true, force: true });
    }
  }
}
