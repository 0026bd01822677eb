/**
 * What a moat data directory's sandboxes hold on the host, and what its node's records say they
 * should hold: crash and containment tests compare the two, so that a leak of any kind (a runsc
 * container or process, a netns, a veth, a mount, a cgroup, a sandbox directory, a half-made layer
 * or build) fails them.
 */
import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { readdir, readFile } from "node:fs/promises";
import path from "node:path";
import { isDeepStrictEqual } from "node:util";
import { createClient } from "@connectrpc/connect";
import { listLinks, listNamespaces, Slot } from "@moat/orchestrator";
import { SandboxService } from "@moat/shared/gen/orchestrator";
import { hostResources, nodeTransport, type RunningOrchestrator } from "./orchestrator.js";

/** The node's own view (orchestrator.SandboxService on its loopback port, with its node token). */
export function nodeClient(port: number, token: string) {
  return createClient(SandboxService, nodeTransport(port, token));
}

/** Container cgroups under moat's cgroup path (`/moat/<container>`), per controller on cgroup v1. */
export async function moatCgroups(): Promise<string[]> {
  const roots = existsSync("/sys/fs/cgroup/cgroup.controllers")
    ? ["/sys/fs/cgroup/moat"]
    : ["pids", "memory", "cpu"].map((c) => `/sys/fs/cgroup/${c}/moat`);
  const found = new Set<string>();
  for (const root of roots) {
    for (const entry of await readdir(root, { withFileTypes: true }).catch(() => [])) {
      if (entry.isDirectory()) found.add(entry.name);
    }
  }
  return [...found].sort();
}

/** runsc processes of this data directory (its state dir is on their command lines). */
export async function runscProcesses(dataDir: string): Promise<string[]> {
  const stateDir = path.join(dataDir, "runsc");
  const found: string[] = [];
  for (const pid of await readdir("/proc")) {
    if (!/^\d+$/.test(pid)) continue;
    const cmdline = await readFile(`/proc/${pid}/cmdline`, "utf8").catch(() => "");
    if (cmdline.includes(stateDir)) found.push(cmdline.split("\0").filter(Boolean).slice(0, 1).join(" "));
  }
  return found.sort();
}

/** After moat stopped: no runsc process of `dataDir` and no container cgroup but those in `foreign` (there before). */
export async function assertNothingOutlives(dataDir: string, foreign: readonly string[]): Promise<void> {
  assert.deepEqual(await runscProcesses(dataDir), [], "no runsc process outlives moat");
  assert.deepEqual(
    (await moatCgroups()).filter((c) => !foreign.includes(c)),
    [],
    "no container cgroup outlives moat",
  );
}

/** moat's own namespaces (moat-n<i>, moat-g<i>) and veths (moat-v<i>); the host's others are not ours. */
const MOAT_NAMESPACE = /^moat-[ng]\d+$/;
const MOAT_LINK = /^moat-v\d+$/;

/** What the host holds of moat's before a suite starts (another run's): its leak check leaves it out. */
export interface ForeignResources {
  cgroups: string[];
  namespaces: string[];
  links: string[];
}

export async function foreignResources(): Promise<ForeignResources> {
  return {
    cgroups: await moatCgroups(),
    namespaces: (await listNamespaces()).filter((n) => MOAT_NAMESPACE.test(n)),
    links: (await listLinks()).filter((n) => MOAT_LINK.test(n)),
  };
}

/**
 * After moat stopped with every sandbox deleted: no runsc process or container, container cgroup,
 * namespace, veth, mount or loop device of `dataDir`'s sandboxes is left.
 */
export async function assertNoSandboxOutlives(dataDir: string, foreign: ForeignResources): Promise<void> {
  await assertNothingOutlives(dataDir, foreign.cgroups);
  const host = await hostResources({ dataDir });
  assert.deepEqual(
    {
      containers: host.containers,
      namespaces: host.namespaces.filter((n) => MOAT_NAMESPACE.test(n) && !foreign.namespaces.includes(n)),
      links: host.links.filter((n) => MOAT_LINK.test(n) && !foreign.links.includes(n)),
      mounts: host.mounts,
      loops: host.loops,
    },
    { containers: [], namespaces: [], links: [], mounts: [], loops: [] },
    "no container, network, mount or disk of a sandbox outlives moat",
  );
}

interface NodeRecord {
  sandboxID: string;
  state: string;
  lifecycleID: string;
  slotIndex: number;
  dir: string;
}

async function records(dataDir: string): Promise<NodeRecord[]> {
  const root = path.join(dataDir, "sandboxes");
  const out: NodeRecord[] = [];
  for (const dir of await readdir(root).catch(() => [] as string[])) {
    const text = await readFile(path.join(root, dir, "sandbox.json"), "utf8").catch(() => undefined);
    if (text) out.push(JSON.parse(text) as NodeRecord);
  }
  return out;
}

/**
 * Waits until no killed sandbox is still being released: a kill answers once the sandbox is
 * stopped, and its record says "stopping" until the release in the background removed it.
 */
export async function releasesDone(dataDir: string, timeoutMs = 30_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const stopping = (await records(dataDir)).filter((r) => r.state === "stopping");
    if (stopping.length === 0) return;
    const ids = stopping.map((r) => r.sandboxID).join(", ");
    assert.ok(Date.now() < deadline, `killed sandboxes still being released after ${timeoutMs} ms: ${ids}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** The sandbox directory a mount under the data directory is in, or the mount point itself. */
function mountOwner(dataDir: string, mountPoint: string): string {
  const rel = path.relative(path.join(dataDir, "sandboxes"), mountPoint).split(path.sep);
  return rel.length > 1 && rel[0] !== ".." ? rel[0]! : mountPoint;
}

/**
 * The host as it is, beside the host as the node's records say it should be: every running
 * sandbox's container, cgroup, two namespaces, veth and mounts, a directory per record, and
 * nothing half-made under templates/.
 */
export async function hostState(dataDir: string, options: { foreignCgroups?: readonly string[] } = {}) {
  const resources = await hostResources({ dataDir } as RunningOrchestrator);
  const all = await records(dataDir);
  const running = all.filter((r) => r.state === "running");
  const layers = await readdir(path.join(dataDir, "templates", "layers")).catch(() => [] as string[]);
  const actual = {
    containers: resources.containers,
    // Cgroups that were there before the test (another run's) are not this data directory's.
    cgroups: (await moatCgroups()).filter((c) => !options.foreignCgroups?.includes(c)),
    namespaces: resources.namespaces.filter((n) => MOAT_NAMESPACE.test(n)),
    links: resources.links.filter((n) => MOAT_LINK.test(n)),
    // By sandbox: a running one has its root (and whatever else its run mounts), others none.
    mounts: [...new Set(resources.mounts.map((m) => mountOwner(dataDir, m)))].sort(),
    dirs: resources.dirs,
    halfMadeLayers: layers.filter((n) => n.startsWith(".tmp-")),
  };
  const expected = {
    containers: running.map((r) => r.lifecycleID).sort(),
    cgroups: running.map((r) => r.lifecycleID).sort(),
    namespaces: running
      .flatMap((r) => [new Slot(r.slotIndex).outerNamespace, new Slot(r.slotIndex).guestNamespace])
      .sort(),
    links: running.map((r) => new Slot(r.slotIndex).hostVeth).sort(),
    mounts: running.map((r) => r.dir).sort(),
    dirs: all.map((r) => r.dir).sort(),
    halfMadeLayers: [] as string[],
  };
  return { actual, expected, records: all, processes: await runscProcesses(dataDir) };
}

/**
 * hostState once the host holds what the records name (or as it is after `timeoutMs`): a sandbox
 * that was just killed or paused releases its runtime, mounts and network a moment later.
 */
export async function settledHostState(
  dataDir: string,
  options: { foreignCgroups?: readonly string[] },
  timeoutMs: number,
): Promise<Awaited<ReturnType<typeof hostState>>> {
  const deadline = Date.now() + timeoutMs;
  let host = await hostState(dataDir, options);
  while (!isDeepStrictEqual(host.actual, host.expected) && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 250));
    host = await hostState(dataDir, options);
  }
  return host;
}
