import { mkdir, readFile, rm, writeFile } from "node:fs/promises";
import path from "node:path";
import { processAlive } from "./process.js";

/**
 * One orchestrator per host: sandbox names and addresses derive from slot numbers, and startup
 * reclaim removes every `moat-*` namespace it does not own, so a second orchestrator would tear
 * down the first one's sandboxes. The lock is a pid file; a stale one (its process is gone, e.g.
 * after a crash) is taken over.
 */
export const HOST_LOCK_PATH = "/run/moat/orchestrator.pid";

export class HostLockedError extends Error {
  constructor(readonly pid: number) {
    super(
      `another moat orchestrator (pid ${pid}) runs on this host; stop it first (one orchestrator per host owns its sandbox networks)`,
    );
    this.name = "HostLockedError";
  }
}

export async function acquireHostLock(lockPath = HOST_LOCK_PATH): Promise<() => Promise<void>> {
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
    if (owner && owner !== process.pid && (await processAlive(owner))) throw new HostLockedError(owner);
    await rm(lockPath, { force: true });
  }
  throw new Error(`could not take the host lock ${lockPath}`);
}
