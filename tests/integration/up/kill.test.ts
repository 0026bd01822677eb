/**
 * Kills end to end: the unmodified e2b SDK against `moat up`. `sbx.kill()` answers once the
 * sandbox is stopped, and at that moment nothing of it runs (its runsc sandbox process and every
 * process in it have exited, a command writing a file writes no more) and the client proxy
 * answers 502 for it; its slow release (runsc delete, unmounts, network, directory) runs on after
 * the answer and leaves nothing. A crash of moat right after kills, a paused sandbox's among them,
 * leaves nothing either once the restart has finished the releases.
 */
import assert from "node:assert/strict";
import { readdir, readFile, stat } from "node:fs/promises";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import { Sandbox } from "e2b";
import { assertNothingOutlives, moatCgroups, nodeClient, settledHostState } from "../helpers/host-state.js";
import { getByHost, type RunningMoat, startMoat, useMoat } from "../helpers/moat-up.js";

/** A command that appends to a file every 50 ms for as long as it runs. */
const TICKER = "sh -c 'while :; do date +%s%N >> /home/user/ticks; sleep 0.05; done'";

/** Generous for a loaded CI host: a kill that waits for `runsc delete` takes 1.3–2.5 s here. */
const KILL_BOUND_MS = 1000;

interface NodeRecord {
  sandboxID: string;
  state: string;
  lifecycleID: string;
  dir: string;
}

describe("moat up: kills answer at once and leave nothing", { timeout: 600_000 }, () => {
  let moat: RunningMoat;
  let foreignCgroups: string[] = [];

  async function records(): Promise<NodeRecord[]> {
    const root = path.join(moat.dataDir, "sandboxes");
    const out: NodeRecord[] = [];
    for (const dir of await readdir(root).catch(() => [] as string[])) {
      const text = await readFile(path.join(root, dir, "sandbox.json"), "utf8").catch(() => "");
      if (text) out.push(JSON.parse(text) as NodeRecord);
    }
    return out;
  }

  async function recordOf(sandboxID: string): Promise<NodeRecord> {
    const record = (await records()).find((r) => r.sandboxID === sandboxID);
    assert.ok(record, `a record for ${sandboxID}`);
    return record;
  }

  /** Live (not zombie) processes: pid → [ppid, command line]. */
  async function processes(): Promise<Map<number, [number, string]>> {
    const out = new Map<number, [number, string]>();
    for (const name of await readdir("/proc")) {
      if (!/^\d+$/.test(name)) continue;
      const statLine = await readFile(`/proc/${name}/stat`, "utf8").catch(() => "");
      const fields = statLine.slice(statLine.lastIndexOf(")") + 2).split(" ");
      if (!fields[0] || fields[0] === "Z" || fields[0] === "X") continue;
      const cmdline = await readFile(`/proc/${name}/cmdline`, "utf8").catch(() => "");
      out.set(Number(name), [Number(fields[1]), cmdline.split("\0").join(" ")]);
    }
    return out;
  }

  /** The runsc sandbox process of a container (its last argument is the container id) and its children. */
  async function sandboxProcesses(lifecycleID: string): Promise<number[]> {
    const all = await processes();
    const sentry = [...all].find(([, [, cmd]]) => cmd.includes(" boot ") && cmd.trim().endsWith(lifecycleID));
    if (!sentry) return [];
    return [sentry[0], ...[...all].filter(([, [ppid]]) => ppid === sentry[0]).map(([pid]) => pid)];
  }

  async function size(file: string): Promise<number> {
    return (await stat(file).catch(() => undefined))?.size ?? -1;
  }

  /** The host holds what the live sandboxes' records name and nothing else, once releases ended. */
  async function hostSettles(what: string): Promise<void> {
    const host = await settledHostState(moat.dataDir, { foreignCgroups }, 20_000);
    assert.deepEqual(host.actual, host.expected, what);
  }

  before(async () => {
    foreignCgroups = await moatCgroups();
    // No networks made ahead: the host must hold only what the sandboxes' records name.
    moat = await startMoat({ env: { MOAT_NETWORK_POOL_SIZE: "0" } });
    useMoat(moat);
  });

  after(async () => {
    if (!moat) return;
    const dataDir = moat.dataDir;
    await moat.cleanup();
    await assertNothingOutlives(dataDir, foreignCgroups);
  });

  test("kill returns fast; at its return nothing of the sandbox runs or answers; its release leaves nothing", async () => {
    const durations: number[] = [];
    for (let i = 0; i < 3; i++) {
      const sbx = await Sandbox.create("base");
      await sbx.commands.run(TICKER, { background: true, timeoutMs: 0 });
      const record = await recordOf(sbx.sandboxId);
      const ticks = path.join(moat.dataDir, "sandboxes", record.dir, "rootfs", "home", "user", "ticks");
      const first = await size(ticks);
      for (let n = 0; n < 100 && (await size(ticks)) <= first; n++)
        await new Promise((r) => setTimeout(r, 20));
      assert.ok((await size(ticks)) > first, "the command writes while the sandbox runs");
      const running = await sandboxProcesses(record.lifecycleID);
      assert.ok(running.length > 0, "its runsc sandbox process is found");

      const started = performance.now();
      await sbx.kill();
      durations.push(performance.now() - started);

      // Right at the return: nothing of it runs, and the proxy has nothing to send its traffic to.
      const live = new Set((await processes()).keys());
      assert.deepEqual(
        running.filter((pid) => live.has(pid)),
        [],
        "its runsc sandbox process and the processes it ran have exited",
      );
      const health = await getByHost(moat, sbx.sandboxId, 49983, "/health");
      assert.equal(health.status, 502, `its envd through the proxy: ${health.body}`);
      const at = await size(ticks);
      await new Promise((r) => setTimeout(r, 300));
      const later = await size(ticks);
      assert.ok(later === at || later === -1, `the command wrote on after the kill (${at} → ${later} bytes)`);
      assert.equal(await sbx.isRunning().catch(() => false), false);
    }
    durations.sort((a, b) => a - b);
    assert.ok(durations[1]! < KILL_BOUND_MS, `kill median ${durations[1]!.toFixed(0)} ms`);
    // The release in the background: no container, cgroup, netns, veth, mount, directory or runsc
    // process of them is left.
    await hostSettles("the killed sandboxes' releases leave nothing");
    assert.deepEqual(await records(), []);
  });

  test("a crash right after kills (a running and a paused sandbox): the restart finishes their release", async () => {
    const running = await Sandbox.create("base");
    await running.commands.run(TICKER, { background: true, timeoutMs: 0 });
    const paused = await Sandbox.create("base");
    await paused.files.write("/home/user/kept.txt", "files of a paused sandbox");
    await paused.pause();
    await Promise.all([running.kill(), paused.kill()]);
    await moat.stop("SIGKILL");
    const left = await records();
    assert.ok(
      left.some((r) => r.state === "stopping"),
      `the crash came while a release ran: ${JSON.stringify(left.map((r) => r.state))}`,
    );
    assert.ok(
      left.every((r) => r.state === "stopping"),
      "a killed sandbox's record says so before the kill answers",
    );

    await moat.restart();
    useMoat(moat);
    await hostSettles("the restart released what the kills left");
    assert.deepEqual(await records(), [], "nothing kept, a paused sandbox's files neither");
    const node = nodeClient(moat.orchestratorPort, moat.nodeToken);
    assert.deepEqual((await node.list({})).sandboxes, [], "the node has neither");
    const listed = (await Sandbox.list().nextItems()).map((s) => s.sandboxId);
    assert.ok(!listed.includes(running.sandboxId) && !listed.includes(paused.sandboxId));
  });
});
