import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import path from "node:path";
import { CommandError, runCommand } from "@moat/shared";
import { pathWithSbin } from "../host/files.js";

export type SmokeResult =
  | { ok: true; ms: number }
  | {
      ok: false;
      /** runsc refused to use a fresh netns, believing it is the root one (see netns-patch.ts). */
      netnsMisdetected: boolean;
      message: string;
    };

/**
 * Runs /bin/true in a gVisor sandbox the way moat runs sandboxes: the given platform, gVisor's own
 * network stack in a network namespace that runsc creates for it (so nothing to clean up on the
 * host), the host's / as a read-only root. This exercises the platform and the root-netns check
 * together in about 0.2 s, with its own state dir so it never meets moat's containers.
 */
export async function smokeTestRunsc(opts: {
  binary: string;
  runtimeDir: string;
  platform: string;
}): Promise<SmokeResult> {
  await mkdir(opts.runtimeDir, { recursive: true });
  const dir = await mkdtemp(path.join(opts.runtimeDir, `.smoke-${process.pid}-`));
  try {
    const bundle = path.join(dir, "bundle");
    await mkdir(bundle);
    await writeFile(path.join(bundle, "config.json"), JSON.stringify(smokeSpec()));
    const started = performance.now();
    await runCommand(
      [
        opts.binary,
        "--root",
        path.join(dir, "state"),
        `--platform=${opts.platform}`,
        "--network=sandbox",
        "run",
        "--bundle",
        bundle,
        `moat-smoke-${process.pid}`,
      ],
      { timeoutMs: 30_000, env: { ...process.env, PATH: pathWithSbin() } },
    );
    return { ok: true, ms: Math.round(performance.now() - started) };
  } catch (err) {
    const message = err instanceof CommandError ? err.message : String(err);
    return { ok: false, netnsMisdetected: /root network namespace/.test(message), message };
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

function smokeSpec(): Record<string, unknown> {
  return {
    ociVersion: "1.0.0",
    process: {
      terminal: false,
      user: { uid: 0, gid: 0 },
      args: ["/bin/true"],
      env: ["PATH=/usr/sbin:/usr/bin:/sbin:/bin"],
      cwd: "/",
    },
    root: { path: "/", readonly: true },
    hostname: "moat-smoke",
    mounts: [
      { destination: "/proc", type: "proc", source: "proc" },
      { destination: "/dev", type: "tmpfs", source: "tmpfs" },
    ],
    // A network namespace without a path: runsc makes a fresh one, as a sandbox's own netns is.
    linux: {
      namespaces: [{ type: "pid" }, { type: "network" }, { type: "ipc" }, { type: "uts" }, { type: "mount" }],
    },
  };
}
