import { existsSync } from "node:fs";
import { mkdtemp, readFile, rm, statfs, writeFile } from "node:fs/promises";
import { hostname, tmpdir } from "node:os";
import path from "node:path";
import { createNoopLogger, runCommand } from "@moat/shared";
import { describeArtifactStore, openArtifactStore } from "../artifacts/open.js";
import { readDiskSizeMB } from "../config.js";
import { findOnPath, pathWithSbin } from "../host/files.js";
import { MIN_DISK_SIZE_MB, mountDisk, unmountDisk } from "../storage/disk.js";
import { probeLayerSandbox } from "../template/oci/layers.js";
import { findDebianMirror } from "./apt-sources.js";
import { BASE_SUITE } from "./base-definition.js";
import { findBaseTemplate } from "./base-template.js";
import { execInNetns, probeNetns, withProbeNetns } from "./netns-probe.js";
import { ensureRunsc, runtimeDir } from "./runsc-install.js";
import { SetupError } from "./setup-error.js";
import { smokeTestRunsc } from "./smoke-test.js";

/** One prerequisite, as `moat doctor` prints it. */
export interface DoctorCheck {
  name: string;
  ok: boolean;
  /** What was found, in a few words. */
  detail: string;
  /** What to do about it: present when not ok, and with a warning. */
  fix?: string;
  /** Ok, but worth attention (e.g. little free disk). */
  warning?: boolean;
}

/** Below this much free space in the data dir, doctor warns (the base template alone is ~0.5 GB). */
const LOW_DISK_BYTES = 5 * 1024 ** 3;

/**
 * Checks everything moat needs from the host, one check per prerequisite, each with what to do
 * when it fails. Read-mostly: it creates and deletes temporary network namespaces (moat-probe-*),
 * and may cache the runsc decision as `moat setup` would, but never downloads or builds.
 */
export async function runDoctor(opts: {
  dataDir: string;
  /** The node's MOAT_DISK_SIZE_MB (default: read from the environment; a malformed one is the node's to report). */
  diskSizeMB?: number;
  /** The node's shared artifact storage (default: MOAT_ARTIFACTS; unset: not checked). */
  artifacts?: string;
}): Promise<DoctorCheck[]> {
  const diskSizeMB = opts.diskSizeMB ?? readDiskSizeMB();
  const artifacts = opts.artifacts ?? process.env.MOAT_ARTIFACTS;
  const checks: Array<[string, () => Promise<Omit<DoctorCheck, "name">>]> = [
    ["root", checkRoot],
    ["runsc", () => checkRunsc(opts.dataDir)],
    ["netns", checkNetns],
    ["nftables", checkNftables],
    ["cgroups", checkCgroups],
    ["debootstrap", checkDebootstrap],
    ["bubblewrap", checkBubblewrap],
    ["disk", () => checkDisk(opts.dataDir)],
    ["sandbox-disks", () => checkSandboxDisks(diskSizeMB)],
    ["ip-forward", checkIPForward],
    ["base-template", () => checkTemplate(opts.dataDir)],
    ...(artifacts ? [["artifacts", () => checkArtifacts(artifacts)] as (typeof checks)[number]] : []),
  ];
  const results: DoctorCheck[] = [];
  for (const [name, check] of checks) {
    try {
      results.push({ name, ...(await check()) });
    } catch (err) {
      results.push({
        name,
        ok: false,
        detail: err instanceof SetupError ? err.message.replace(`. ${err.fix}`, "") : (err as Error).message,
        fix: err instanceof SetupError ? err.fix : asRootFix("if it still fails, report the message above"),
      });
    }
  }
  return results;
}

/** The shared artifact store answers, and takes, gives back and removes a small object. */
export async function checkArtifacts(location: string): Promise<Omit<DoctorCheck, "name">> {
  const fix =
    "Check --artifacts / MOAT_ARTIFACTS: the directory must be mounted and writable by root, the S3 bucket must exist and AWS_ENDPOINT_URL_S3, AWS_REGION and the credentials must reach it";
  let store: Awaited<ReturnType<typeof openArtifactStore>>;
  try {
    store = await openArtifactStore(location);
  } catch (err) {
    return { ok: false, detail: (err as Error).message, fix };
  }
  const where = describeArtifactStore(store);
  const work = await mkdtemp(path.join(tmpdir(), "moat-doctor-artifacts-"));
  const key = `doctor/${hostname().replace(/[^A-Za-z0-9._-]/g, "_")}-${process.pid}-${Date.now()}.probe`;
  try {
    const file = path.join(work, "probe");
    await writeFile(file, `moat doctor ${new Date().toISOString()}\n`);
    await store.putFile(key, file);
    if (!(await store.getFile(key, path.join(work, "back"))))
      throw new Error("an object just put cannot be read back");
    await store.delete(key);
    return { ok: true, detail: `${store.kind} ${where}: reachable and writable` };
  } catch (err) {
    await store.delete(key).catch(() => undefined);
    return { ok: false, detail: `${store.kind} ${where}: ${(err as Error).message}`, fix };
  } finally {
    await rm(work, { recursive: true, force: true });
  }
}

async function checkRoot(): Promise<Omit<DoctorCheck, "name">> {
  const uid = process.getuid?.();
  return uid === 0
    ? { ok: true, detail: "running as root" }
    : {
        ok: false,
        detail: `running as uid ${uid}; sandboxes need root (namespaces, nftables, runsc)`,
        fix: "Run moat as root, e.g. `sudo moat doctor`",
      };
}

async function checkRunsc(dataDir: string): Promise<Omit<DoctorCheck, "name">> {
  const install = await ensureRunsc({ dataDir, logger: createNoopLogger(), allowDownload: false });
  const smoke = await smokeTestRunsc({
    binary: install.path,
    runtimeDir: runtimeDir(dataDir),
    platform: install.platform,
  });
  const origin = install.source === "debian-trixie" ? "downloaded from Debian trixie" : "found on this host";
  const netns =
    install.netnsFix === "patched-binary"
      ? "root-netns misdetection present, fixed by a patched copy"
      : "no root-netns misdetection";
  const idle =
    install.idleFix === "patched-binary"
      ? "systrap's idle wake-ups slowed by the same copy"
      : "no systrap idle wake-ups to patch";
  const detail = `${install.version} (${origin}), platform ${install.platform}, ${netns}, ${idle}: ${install.path}`;
  if (!smoke.ok) {
    return {
      ok: false,
      detail: `${detail}; smoke sandbox failed: ${smoke.message}`,
      fix: "Run `moat setup` to re-check runsc, or install gVisor 20240801+ and set MOAT_RUNSC",
    };
  }
  return { ok: true, detail: `${detail}; smoke sandbox ran in ${smoke.ms} ms` };
}

async function checkNetns(): Promise<Omit<DoctorCheck, "name">> {
  try {
    const probe = await probeNetns();
    const shows = probe.rootProbeLeaks
      ? "a new netns shows /proc/sys/net/core/rmem_default (runsc < 20240801 needs its patch)"
      : "a new netns hides /proc/sys/net/core/rmem_default";
    return { ok: true, detail: `ip netns add/exec/delete work; ${shows}` };
  } catch (err) {
    return {
      ok: false,
      detail: `could not create a network namespace: ${(err as Error).message}`,
      fix: asRootFix("install iproute2 (apt-get install iproute2) on a kernel with network namespaces"),
    };
  }
}

async function checkNftables(): Promise<Omit<DoctorCheck, "name">> {
  const nft = await findOnPath("nft");
  if (!nft) {
    return { ok: false, detail: "nft is not installed", fix: "Install it: apt-get install nftables" };
  }
  const { stdout } = await runCommand([nft, "--version"], { timeoutMs: 10_000 });
  const version = stdout.trim();
  const probe = withProbeNetns(async (name) => {
    const add = await execInNetns(name, [nft, "add", "table", "inet", "moat_probe"]);
    const del =
      add.exitCode === 0 ? await execInNetns(name, [nft, "delete", "table", "inet", "moat_probe"]) : add;
    if (add.exitCode !== 0 || del.exitCode !== 0) {
      return {
        ok: false,
        detail: `${version}, but creating a table in a network namespace failed: ${del.output.trim()}`,
        fix: "Load the nf_tables kernel module (modprobe nf_tables) and run as root",
      };
    }
    return { ok: true, detail: `${version}; a table can be created and deleted in a network namespace` };
  });
  return probe.catch((err: Error) => ({
    ok: false,
    detail: `${version}, but no network namespace to test it in: ${err.message}`,
    fix: asRootFix("see the netns check"),
  }));
}

/** "Run as root" when not root, else `otherwise`. */
function asRootFix(otherwise: string): string {
  const then = otherwise.charAt(0).toUpperCase() + otherwise.slice(1);
  return process.getuid?.() === 0 ? then : "Run moat as root, e.g. `sudo moat doctor`";
}

/** The controllers sandboxes are limited with. */
const CGROUP_CONTROLLERS = ["memory", "cpu", "pids"];

async function checkCgroups(): Promise<Omit<DoctorCheck, "name">> {
  const mounts = (await readFile("/proc/self/mountinfo", "utf8")).split("\n").map((line) => {
    // Fields: … mount-point … " - " fstype source super-options.
    const [before, after] = line.split(" - ");
    const [fstype, , superOptions] = (after ?? "").split(" ");
    return { point: before?.split(" ")[4] ?? "", fstype, options: (superOptions ?? "").split(",") };
  });
  const v1 = new Map<string, string>();
  for (const mount of mounts.filter((m) => m.fstype === "cgroup")) {
    for (const controller of CGROUP_CONTROLLERS) {
      if (mount.options.includes(controller)) v1.set(controller, mount.point);
    }
  }
  const unified = mounts.find((m) => m.fstype === "cgroup2");
  const v2Controllers = unified
    ? (await readFile(path.join(unified.point, "cgroup.controllers"), "utf8").catch(() => ""))
        .trim()
        .split(/\s+/)
    : [];
  const missing = CGROUP_CONTROLLERS.filter((c) => !v1.has(c) && !v2Controllers.includes(c));
  const found = [
    v1.size > 0 ? `v1 ${[...v1].map(([c, p]) => `${c} at ${p}`).join(", ")}` : "",
    unified
      ? `cgroup2 at ${unified.point}${v2Controllers.filter(Boolean).length ? ` (${v2Controllers.join(" ")})` : ""}`
      : "",
  ]
    .filter(Boolean)
    .join("; ");
  if (missing.length > 0) {
    return {
      ok: false,
      detail: `controllers ${missing.join(", ")} are not available (${found || "no cgroup mounts"})`,
      fix: "Boot with cgroups enabled (systemd does this), or mount them: mount -t cgroup2 none /sys/fs/cgroup",
    };
  }
  return { ok: true, detail: found };
}

/**
 * Sandbox disks (storage/disk.ts): mkfs.ext4 and loop devices. Probed by making, mounting and
 * removing a small one.
 */
async function checkSandboxDisks(diskSizeMB: number | undefined): Promise<Omit<DoctorCheck, "name">> {
  if (diskSizeMB === 0) {
    return {
      ok: true,
      detail: "off (MOAT_DISK_SIZE_MB=0): sandboxes may fill the data directory's disk",
      warning: true,
    };
  }
  if (!(await findOnPath("mkfs.ext4"))) {
    return {
      ok: false,
      detail: "mkfs.ext4 is not installed (each sandbox's disk is an ext4 image)",
      fix: "Install it: apt-get install e2fsprogs",
    };
  }
  const dir = await mkdtemp(path.join(tmpdir(), "moat-disk-probe-"));
  try {
    await mountDisk(dir, MIN_DISK_SIZE_MB);
    await unmountDisk(dir);
    return { ok: true, detail: "an ext4 image can be made and loop-mounted nosuid,nodev" };
  } catch (err) {
    return {
      ok: false,
      detail: `a sandbox disk could not be mounted: ${(err as Error).message}`,
      fix: asRootFix(
        "load the loop module (modprobe loop; in a container, give it /dev/loop-control and the loop devices), or set MOAT_DISK_SIZE_MB=0 to run without disk limits",
      ),
    };
  } finally {
    await unmountDisk(dir).catch(() => undefined);
    await rm(dir, { recursive: true, force: true });
  }
}

async function checkDebootstrap(): Promise<Omit<DoctorCheck, "name">> {
  const debootstrap = await findOnPath("debootstrap");
  if (!debootstrap) {
    return {
      ok: false,
      detail: "debootstrap is not installed (it builds the base template)",
      fix: "Install it: apt-get install debootstrap",
    };
  }
  const { stdout } = await runCommand([debootstrap, "--version"], {
    timeoutMs: 10_000,
    env: { ...process.env, PATH: pathWithSbin() },
  });
  if (!existsSync(`/usr/share/debootstrap/scripts/${BASE_SUITE}`)) {
    return {
      ok: false,
      detail: `${stdout.trim()} does not know Debian ${BASE_SUITE}`,
      fix: "Upgrade it: apt-get install debootstrap",
    };
  }
  const mirror = await findDebianMirror();
  return { ok: true, detail: `${stdout.trim()}; mirror ${mirror.uri} (from ${mirror.origin})` };
}

/** Image layers are applied in a bubblewrap sandbox that can write only the image's rootfs. */
async function checkBubblewrap(): Promise<Omit<DoctorCheck, "name">> {
  const bwrap = await findOnPath("bwrap");
  if (!bwrap) {
    return {
      ok: false,
      detail: "bwrap is not installed (templates from images apply their layers in its sandbox)",
      fix: "Install it: apt-get install bubblewrap",
    };
  }
  const { stdout } = await runCommand([bwrap, "--version"], { timeoutMs: 10_000 });
  try {
    const ms = await probeLayerSandbox();
    return {
      ok: true,
      detail: `${stdout.trim()}; the layer sandbox starts and writes its rootfs (${ms} ms)`,
    };
  } catch (err) {
    return {
      ok: false,
      detail: `${stdout.trim()}, but the layer sandbox failed: ${(err as Error).message}`,
      fix: asRootFix("run on a kernel with mount, pid and network namespaces (bwrap needs them)"),
    };
  }
}

async function checkDisk(dataDir: string): Promise<Omit<DoctorCheck, "name">> {
  // The data dir may not exist yet: measure the filesystem it will be created on.
  let dir = path.resolve(dataDir);
  while (!existsSync(dir) && dir !== path.dirname(dir)) dir = path.dirname(dir);
  const fs = await statfs(dir);
  const free = fs.bavail * fs.bsize;
  const detail = `${(free / 1024 ** 3).toFixed(1)} GB free for ${dataDir}`;
  if (free < LOW_DISK_BYTES) {
    return {
      ok: true,
      warning: true,
      detail: `${detail} (under 5 GB: the base template takes ~0.5 GB and every sandbox writes its own layer)`,
      fix: "Free some space, or point MOAT_DATA_DIR / --data-dir at a larger disk",
    };
  }
  return { ok: true, detail };
}

async function checkIPForward(): Promise<Omit<DoctorCheck, "name">> {
  const file = "/proc/sys/net/ipv4/ip_forward";
  const value = (await readFile(file, "utf8")).trim();
  try {
    // Writing the current value back proves moat may set it without changing anything now.
    await writeFile(file, value);
  } catch (err) {
    return {
      ok: false,
      detail: `net.ipv4.ip_forward=${value} and not writable (${(err as NodeJS.ErrnoException).code})`,
      fix: "Run as root outside a read-only /proc/sys, or set it on the host: sysctl -w net.ipv4.ip_forward=1",
    };
  }
  return {
    ok: true,
    detail: `net.ipv4.ip_forward=${value}, settable${value === "1" ? "" : " (moat enables it for sandbox egress)"}`,
  };
}

async function checkTemplate(dataDir: string): Promise<Omit<DoctorCheck, "name">> {
  const template = await findBaseTemplate(dataDir);
  if (!template) {
    return {
      ok: false,
      detail: "the base template of the current definition is not built",
      fix: "Run `moat setup` (debootstrap, about a minute)",
    };
  }
  return { ok: true, detail: `built ${template.builtAt} (${template.hash}): ${template.rootfs}` };
}
