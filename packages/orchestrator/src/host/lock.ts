import { mkdir, readFile, readlink, rm, writeFile } from "node:fs/promises";
import path from "node:path";
import { processAlive } from "./process.js";

/**
 * One orchestrator per name prefix and per network namespace: sandbox names and addresses derive
 * from slot numbers, and startup reclaim removes every namespace of its prefix (and every sandbox
 * veth of its network namespace) it does not own, so a second orchestrator with the same prefix,
 * or in the same network namespace, would tear down the first one's sandboxes. Each lock is a pid
 * file; a stale one (its process is gone, e.g. after a crash) is taken over.
 */
export const HOST_LOCK_PATH = "/run/moat/orchestrator.pid";

/** The lock of a name prefix: the default prefix keeps the path it always had. */
export function hostLockPath(namePrefix: string, defaultPrefix = "moat-"): string {
  return namePrefix === defaultPrefix ? HOST_LOCK_PATH : `/run/moat/${namePrefix}orchestrator.pid`;
}

/** The lock of the network namespace this process is in (known by its inode). */
export async function netnsLockPath(): Promise<string> {
  const link = await readlink("/proc/self/ns/net");
  const inode = /\[(\d+)\]/.exec(link)?.[1];
  if (!inode)
    throw new Error(`cannot tell this process's network namespace from /proc/self/ns/net (${link})`);
  return `/run/moat/netns-${inode}.pid`;
}

export class HostLockedError extends Error {
  constructor(
    readonly pid: number,
    what = "this host (one orchestrator per name prefix owns its sandbox networks)",
  ) {
    super(`another moat orchestrator (pid ${pid}) runs on ${what}; stop it first`);
    this.name = "HostLockedError";
  }
}

/** Takes the name prefix's lock, then the network namespace's; the answer releases both. */
export async function acquireNodeLocks(namePrefix: string): Promise<() => Promise<void>> {
  const releasePrefix = await acquireHostLock(hostLockPath(namePrefix));
  try {
    const releaseNetns = await acquireHostLock(
      await netnsLockPath(),
      "this network namespace (its sandbox links and rules are one node's; run another node in a namespace of its own)",
    );
    return async () => {
      await releaseNetns();
      await releasePrefix();
    };
  } catch (err) {
    await releasePrefix();
    throw err;
  }
}

export async function acquireHostLock(
  lockPath = HOST_LOCK_PATH,
  what?: string,
): Promise<() => Promise<void>> {
  await mkdir(path.dirname(lockPath), { recursive: true });
  for (let attempt = 0; attempt < 3; attempt++) {
    try {
      await writeFile(lockPath, `${process.pid}\n`, { flag: "wx" });
      return async () => {
        const owner = Number(await readFile(lockPath, "utf8").catch(() => ""));
        if (owner === process.pid) await rm(lockPath, { force: true });
      };
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "EEXIST") throw err;
    }
    const owner = Number((await readFile(lockPath, "utf8").catch(() => "")).trim());
    if (owner && owner !== process.pid && (await processAlive(owner))) throw new HostLockedError(owner, what);
    await rm(lockPath, { force: true });
  }
  throw new Error(`could not take the host lock ${lockPath}`);
}
