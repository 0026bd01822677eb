/**
 * What a node could leak, read from the host (not from moat's own bookkeeping): network namespaces,
 * links, addresses, routes, nftables rules, mounts, loop devices, cgroups, runsc containers and
 * processes. A picture taken before `moat up` and one taken after it stopped must be equal.
 */
import { readdir, readFile } from "node:fs/promises";
import path from "node:path";
import { listLinks, listNamespaces } from "@moat/orchestrator";
import { runCommand } from "@moat/shared";

/** Each category: one line per resource (a resource held twice appears twice). */
export type HostPicture = Record<string, string[]>;

async function lines(argv: string[]): Promise<string[]> {
  const { stdout } = await runCommand(argv, { timeoutMs: 30_000 });
  return stdout.split("\n").filter(Boolean);
}

/** Every directory of every cgroup hierarchy (v1 controllers and the unified v2 tree alike). */
async function cgroupDirs(root = "/sys/fs/cgroup"): Promise<string[]> {
  const out: string[] = [];
  const walk = async (dir: string, depth: number) => {
    if (depth > 8) return;
    const entries = await readdir(dir, { withFileTypes: true }).catch(() => []);
    for (const entry of entries) {
      if (!entry.isDirectory()) continue;
      const full = path.join(dir, entry.name);
      out.push(full);
      await walk(full, depth + 1);
    }
  };
  await walk(root, 0);
  return out;
}

async function loopDevices(): Promise<string[]> {
  const out: string[] = [];
  for (const name of await readdir("/sys/block").catch(() => [] as string[])) {
    if (!name.startsWith("loop")) continue;
    const backing = await readFile(`/sys/block/${name}/loop/backing_file`, "utf8").catch(() => "");
    if (backing.trim()) out.push(`${name} ${backing.trim()}`);
  }
  return out;
}

/** Mount points with their filesystem type, from this process's mount table. */
async function mounts(): Promise<string[]> {
  return (await readFile("/proc/self/mountinfo", "utf8"))
    .split("\n")
    .filter(Boolean)
    .map((line) => {
      const fields = line.split(" ");
      const dash = fields.indexOf("-");
      return `${fields[4]} ${fields[dash + 1]} ${fields[dash + 2]}`;
    });
}

/** nftables rules without their counters and handles (those change while the rules stay). */
async function nftRules(): Promise<string[]> {
  return (await lines(["nft", "list", "ruleset"]).catch(() => [] as string[]))
    .map((l) =>
      l
        .replace(/counter packets \d+ bytes \d+/g, "counter")
        .replace(/# handle \d+/g, "")
        .trim(),
    )
    .filter((l) => l && l !== "}");
}

export interface ProcessInfo {
  pid: number;
  ppid: number;
  /** Clock ticks since boot when it started: with the pid, names one process across pid reuse. */
  start: number;
  cmdline: string;
}

/** Every process on the host. */
export async function processes(): Promise<ProcessInfo[]> {
  const out: ProcessInfo[] = [];
  for (const name of await readdir("/proc")) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const stat = await readFile(`/proc/${name}/stat`, "utf8");
      // The command name is in parentheses and may hold spaces: fields start after the last ')'.
      const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
      const cmdline = (await readFile(`/proc/${name}/cmdline`, "utf8")).replace(/\0/g, " ").trim();
      out.push({
        pid: Number(name),
        ppid: Number(fields[1]),
        start: Number(fields[19]),
        cmdline: cmdline || stat.slice(stat.indexOf("(") + 1, stat.lastIndexOf(")")),
      });
    } catch {
      // exited meanwhile
    }
  }
  return out;
}

/** The processes below `root` (children, their children, …), `root` excluded. */
export function descendants(all: ProcessInfo[], root: number): ProcessInfo[] {
  const children = new Map<number, ProcessInfo[]>();
  for (const p of all) {
    if (!children.has(p.ppid)) children.set(p.ppid, []);
    children.get(p.ppid)!.push(p);
  }
  const out: ProcessInfo[] = [];
  const stack = [...(children.get(root) ?? [])];
  while (stack.length > 0) {
    const p = stack.pop()!;
    out.push(p);
    stack.push(...(children.get(p.pid) ?? []));
  }
  return out;
}

/** runsc's own list of the containers in a data directory's state root. */
async function runscContainers(dataDir: string): Promise<string[]> {
  const record = JSON.parse(
    await readFile(path.join(dataDir, "runtime", "runsc.json"), "utf8").catch(() => "{}"),
  ) as { install?: { path?: string } };
  if (!record.install?.path) return [];
  // Relative paths in the record are relative to the runtime directory.
  const runsc = path.resolve(dataDir, "runtime", record.install.path);
  return (
    await lines([runsc, "--root", path.join(dataDir, "runsc"), "list", "--quiet"]).catch(() => [])
  ).sort();
}

/**
 * The host as moat could change it. `dataDir` adds its runsc containers, its sandbox directories
 * and the processes naming it (runsc's sandbox and gofer processes carry its state root).
 */
export async function pictureHost(dataDir?: string): Promise<HostPicture> {
  const picture: HostPicture = {
    "network namespaces": await listNamespaces(),
    links: await listLinks(),
    addresses: (await lines(["ip", "-o", "addr", "show"])).map((l) => l.split(/\s+/).slice(1, 4).join(" ")),
    routes: await lines(["ip", "route", "show"]),
    "nftables rules": await nftRules(),
    mounts: await mounts(),
    "loop devices": await loopDevices(),
    cgroups: await cgroupDirs(),
  };
  if (dataDir) {
    picture["runsc containers"] = await runscContainers(dataDir);
    picture["sandbox directories"] = await readdir(path.join(dataDir, "sandboxes")).catch(() => []);
    picture["processes naming the data directory"] = (await processes())
      .filter((p) => p.pid !== process.pid && p.cmdline.includes(dataDir))
      .map(describe);
  }
  return picture;
}

export function describe(p: ProcessInfo): string {
  return `pid ${p.pid}: ${p.cmdline.slice(0, 160)}`;
}

/** What `after` holds that `before` did not (as multisets), per category; empty ones left out. */
export function diffPictures(before: HostPicture, after: HostPicture): Record<string, string[]> {
  const out: Record<string, string[]> = {};
  for (const [category, items] of Object.entries(after)) {
    const left = new Map<string, number>();
    for (const item of before[category] ?? []) left.set(item, (left.get(item) ?? 0) + 1);
    const added: string[] = [];
    for (const item of items) {
      const n = left.get(item) ?? 0;
      if (n > 0) left.set(item, n - 1);
      else added.push(item);
    }
    if (added.length > 0) out[category] = added;
  }
  return out;
}

/**
 * Resident memory (VmRSS), open file descriptors and CPU time used so far (user + system, in
 * seconds) of a process; undefined once it is gone.
 */
export async function processUsage(
  pid: number,
): Promise<{ rssMB: number; fds: number; cpuSeconds: number } | undefined> {
  try {
    const status = await readFile(`/proc/${pid}/status`, "utf8");
    const kb = Number(/VmRSS:\s+(\d+) kB/.exec(status)?.[1] ?? NaN);
    const fds = (await readdir(`/proc/${pid}/fd`)).length;
    const stat = await readFile(`/proc/${pid}/stat`, "utf8");
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    // utime and stime (fields 14 and 15 of stat) in clock ticks, 100 per second on Linux.
    const cpuSeconds = (Number(fields[11]) + Number(fields[12])) / 100;
    return { rssMB: kb / 1024, fds, cpuSeconds };
  } catch {
    return undefined;
  }
}
