/**
 * Applies an image's layers to a root filesystem, bottom first, in a sandbox of their own, since
 * the layers come from registries nobody vetted: Debian's bubblewrap starts layer-child.js as
 * root with only the capabilities extraction needs (owners, modes, times), no network, its own
 * pid, ipc and uts namespaces, no /proc and a fresh /dev, and a filesystem holding only the system
 * directories, moat's extraction code and the image's blobs, all read-only, and the rootfs: the
 * one place it can write, even if a path were resolved wrong (extract.ts resolves them inside the
 * root). Decompression runs in there too.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { existsSync, lstatSync, readlinkSync, realpathSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { createRequire } from "node:module";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { ERROR_PREFIX, LayerError, type LayerJob } from "./extract.js";

/** What an image may unpack to (and download) unless the operator says otherwise: 10 GiB. */
export const DEFAULT_IMAGE_MAX_BYTES = 10 * 2 ** 30;

/** The capabilities writing a rootfs needs: any owner, any mode (setuid too), into any directory. */
const CAPABILITIES = ["CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FOWNER", "CAP_FSETID"];
const SYSTEM_DIRS = ["/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"];

export interface ApplyLayersOptions {
  /** Uncompressed bytes all layers together may hold (default 10 GiB). */
  maxBytes?: number;
  /** A static tini, copied to /usr/bin/tini when the image has none. */
  tini?: string;
  signal?: AbortSignal;
}

export async function applyLayers(
  layers: ReadonlyArray<{ path: string; digest?: string }>,
  rootfs: string,
  options: ApplyLayersOptions = {},
): Promise<void> {
  const root = realpathSync(rootfs);
  const job: LayerJob = {
    rootfs: root,
    layers: layers.map((l, i) => ({ path: realpathSync(l.path), digest: l.digest ?? `#${i + 1}` })),
    maxBytes: options.maxBytes ?? DEFAULT_IMAGE_MAX_BYTES,
    tini: options.tini && existsSync(options.tini) ? realpathSync(options.tini) : undefined,
  };
  const readOnly = [...job.layers.map((l) => l.path), ...(job.tini ? [job.tini] : [])];
  await runInLayerSandbox(job, readOnly, options.signal);
}

/** One layer alone (tests and tools). */
export async function applyLayer(
  blob: string,
  rootfs: string,
  options: ApplyLayersOptions = {},
): Promise<void> {
  await applyLayers([{ path: blob }], rootfs, options);
}

/**
 * Checks the layer sandbox works on this host (for `moat doctor`): applies no layers to a
 * scratch rootfs. Answers the time it took.
 */
export async function probeLayerSandbox(): Promise<number> {
  const scratch = await mkdtemp(path.join(tmpdir(), "moat-layer-probe-"));
  try {
    const started = performance.now();
    await applyLayers([], scratch);
    if (!existsSync(path.join(scratch, "tmp"))) throw new Error("the sandboxed extraction wrote nothing");
    return Math.round(performance.now() - started);
  } finally {
    await rm(scratch, { recursive: true, force: true });
  }
}

/** The code the sandbox runs, and the node_modules it imports tar from. */
function childCode(): { script: string; readOnly: string[] } {
  const script = fileURLToPath(new URL("./layer-child.js", import.meta.url));
  if (!existsSync(script)) throw new LayerError(`${script} is missing: build moat first (npm run build)`);
  const tarEntry = createRequire(import.meta.url).resolve("tar");
  const nodeModules = tarEntry.slice(0, tarEntry.lastIndexOf(`${path.sep}node_modules${path.sep}`) + 13);
  // The package.json nearest the script says it is an ES module.
  const packageJson = path.resolve(path.dirname(script), "../../../package.json");
  return { script, readOnly: [path.dirname(script), packageJson, nodeModules] };
}

/** bubblewrap's arguments: the sandbox described at the top of this file. */
export function layerSandboxArgs(rootfs: string, readOnly: readonly string[]): string[] {
  const args = [
    "--unshare-ipc",
    "--unshare-pid",
    "--unshare-net",
    "--unshare-uts",
    "--unshare-cgroup-try",
    "--die-with-parent",
    "--new-session",
    "--cap-drop",
    "ALL",
    ...CAPABILITIES.flatMap((cap) => ["--cap-add", cap]),
  ];
  for (const dir of SYSTEM_DIRS) {
    const st = lstatOrUndefined(dir);
    if (st?.isSymbolicLink()) args.push("--symlink", readlinkSync(dir), dir);
    else if (st?.isDirectory()) args.push("--ro-bind", dir, dir);
  }
  args.push("--dev", "/dev");
  const node = realpathSync(process.execPath);
  const binds = new Set([node, ...readOnly]);
  for (const file of binds) {
    if (!SYSTEM_DIRS.some((dir) => file.startsWith(`${dir}/`))) args.push("--ro-bind", file, file);
  }
  // Last, so that it is writable even below a read-only path; then the sandbox's own tmpfs root
  // and /dev read-only too (not recursive: the rootfs stays writable).
  args.push("--bind", rootfs, rootfs, "--remount-ro", "/", "--remount-ro", "/dev", "--chdir", "/");
  return args;
}

async function runInLayerSandbox(job: LayerJob, readOnly: string[], signal?: AbortSignal): Promise<void> {
  signal?.throwIfAborted();
  const code = childCode();
  const args = [
    ...layerSandboxArgs(job.rootfs, [...code.readOnly, ...readOnly]),
    realpathSync(process.execPath),
    "--max-old-space-size=1024",
    code.script,
    JSON.stringify(job),
  ];
  const child: ChildProcess = spawn("bwrap", args, {
    stdio: ["ignore", "ignore", "pipe"],
    env: { PATH: "/usr/local/bin:/usr/bin:/bin" },
  });
  let stderr = "";
  child.stderr!.on("data", (chunk: Buffer) => {
    stderr = (stderr + chunk.toString()).slice(-8192);
  });
  const abort = () => child.kill("SIGKILL");
  signal?.addEventListener("abort", abort, { once: true });
  try {
    const [exitCode, exitSignal] = await new Promise<[number | null, NodeJS.Signals | null]>(
      (resolve, reject) => {
        child.once("error", (err: NodeJS.ErrnoException) =>
          reject(
            err.code === "ENOENT"
              ? new LayerError(
                  "bubblewrap (bwrap) is not installed; image layers are applied in its sandbox. " +
                    "Install it: apt-get install bubblewrap",
                )
              : err,
          ),
        );
        child.once("close", (c, s) => resolve([c, s]));
      },
    );
    signal?.throwIfAborted();
    if (exitCode === 0) return;
    const reported = stderr
      .split("\n")
      .reverse()
      .find((line) => line.startsWith(ERROR_PREFIX));
    if (reported) throw new LayerError(reported.slice(ERROR_PREFIX.length));
    const detail = stderr.trim().split("\n").slice(-3).join(" ").slice(0, 500);
    throw new LayerError(
      `the layer sandbox failed (${exitCode ?? exitSignal}): ${detail || "no message"}` +
        (detail.startsWith("bwrap:") ? " (check `moat doctor`)" : ""),
    );
  } finally {
    signal?.removeEventListener("abort", abort);
  }
}

function lstatOrUndefined(file: string) {
  try {
    return lstatSync(file);
  } catch {
    return undefined;
  }
}
