/**
 * A fleet on one machine (helpers/fleet.ts): three orchestrator nodes, each in a network namespace
 * of its own with its own address, name prefix and data directory; two `moat api` processes on one
 * PostgreSQL database; two `moat proxy` processes; Redis. The unmodified `e2b` SDK against it.
 *
 * Several cases need parts of the fleet that other parts build (registration, health and drain;
 * the Redis catalog and node proxies; shared artifacts; relocation): each says which, and is
 * skipped while the commands do not offer it (helpers/fleet.ts asks their `--help`).
 */
import assert from "node:assert/strict";
import { readdir, rm } from "node:fs/promises";
import http from "node:http";
import { after, before, describe, test } from "node:test";
import { runCommand } from "@moat/shared";
import { RateLimitError, Sandbox, Template } from "e2b";
import { type Fleet, fleetLeftovers, makeNodeDataDir, mapLimit, startFleet } from "../helpers/fleet.js";

const NEEDS_ROUTING = "needs the routing part (Redis catalog, node proxies, moat proxy)";
const NEEDS_NODES = "needs the nodes part (registration, health, drain, placement retries)";
const NEEDS_ARTIFACTS = "needs the artifacts and relocate parts (templates and paused sandboxes on any node)";

describe("a fleet: three nodes in their own namespaces, two APIs, two proxies", { timeout: 600_000 }, () => {
  let fleet: Fleet;
  /** Sandboxes the test made, killed at the end whatever happened. */
  const made = new Set<string>();

  before(async () => {
    fleet = await startFleet({ nodes: 3, apis: 2, proxies: 2 });
    // Every part of the fleet is built: a command missing one fails here rather than skip cases.
    assert.deepEqual(fleet.features, { registration: true, routing: true, artifacts: true });
  });

  after(async () => {
    if (!fleet) return;
    await Promise.all([...made].map((id) => Sandbox.kill(id, fleet.sdk()).catch(() => undefined)));
    await fleet.close();
    assert.deepEqual(await fleetLeftovers(), [], "the fleet left something behind");
  });

  /** Creates (of `template`, default base) through API `api` and the proxy of the same number. */
  const create = async (api: number, template = "base") => {
    // A 429 (no node can start one now: busy, or slow to answer on two shared cores) is retried
    // after a moment, as the API asks and as a client would.
    for (let attempt = 1; ; attempt++) {
      try {
        const sbx = await Sandbox.create(template, { ...fleet.sdk(api, api), timeoutMs: 300_000 });
        made.add(sbx.sandboxId);
        return sbx;
      } catch (err) {
        if (!(err instanceof RateLimitError) || attempt >= 20) throw err;
        await new Promise((r) => setTimeout(r, 1000));
      }
    }
  };

  /**
   * Drains a node or makes it ready again through the first API, then waits until every API
   * process has read it (each reads the nodes every second).
   */
  const setStatus = async (nodeID: string, status: "draining" | "ready") => {
    const res = await fetch(`${fleet.apiURLs[0]}/nodes/${nodeID}`, {
      method: "POST",
      headers: { "x-admin-token": fleet.adminToken, "content-type": "application/json" },
      body: JSON.stringify({ status }),
    });
    assert.ok(res.ok, `POST /nodes/${nodeID} answered ${res.status}`);
    await new Promise((r) => setTimeout(r, 2_500));
  };

  /** Which node runs each sandbox, asked of the nodes. */
  const placement = async () => {
    const where = new Map<string, string>();
    for (const [node, ids] of await fleet.sandboxesByNode()) for (const id of ids) where.set(id, node);
    return where;
  };

  /** Envd's health status of sandboxes, asked from inside their host (the only place that reaches them). */
  const envdHealth = async (nodeIndex: number, hostAddresses: string[]): Promise<number[]> => {
    const script = `const answers = await Promise.all(process.argv.slice(1).map((a) =>
      fetch("http://" + a + ":49983/health", { signal: AbortSignal.timeout(5000) }).then((r) => r.status, () => 0)));
    console.log(answers.join(","));`;
    const { stdout } = await runCommand([
      "nsenter",
      `--net=/run/netns/moatfleet-${nodeIndex}`,
      process.execPath,
      "--input-type=module",
      "-e",
      script,
      ...hostAddresses,
    ]);
    return stdout.trim().split(",").map(Number);
  };

  test("each node runs in its namespace with names of its own prefix, its own lock and its own id", async () => {
    for (const node of fleet.nodes) {
      assert.match(node.process.output, new RegExp(`"nodeID":"${node.id}"`));
      assert.match(node.process.output, /"namePrefix":"moat-\d-"/);
    }
    // The node-wide network setup happened in each host: its egress rules, forwarding on there, the
    // resolver's address on its lo.
    for (const node of fleet.nodes) {
      const inHost = (argv: string[]) =>
        runCommand(["nsenter", `--net=/run/netns/${node.namespace}`, ...argv]).then((r) => r.stdout);
      // (nft folds the host's 10.98.<n>.0/24 into the denied 10.0.0.0/8 it lies in.)
      assert.match(
        await inHost(["nft", "list", "table", "inet", "moat"]),
        /ip daddr \{ 0\.0\.0\.0\/8, 10\.0\.0\.0\/8,/,
      );
      assert.equal((await inHost(["sysctl", "-n", "net.ipv4.ip_forward"])).trim(), "1");
      assert.match(await inHost(["ip", "-o", "addr", "show", "dev", "lo"]), /10\.12\.0\.1\/32/);
    }
    const locks = await readdir("/run/moat");
    for (const node of fleet.nodes) assert.ok(locks.includes(`${node.namePrefix}orchestrator.pid`), node.id);
    // A second node with the same prefix, or in the same namespace, is refused (it would reap the first's).
    const [node] = fleet.nodes;
    const secondDir = await makeNodeDataDir(`${node!.dataDir}-second`);
    for (const [prefix, expect] of [
      [node!.namePrefix, /another moat orchestrator \(pid \d+\) runs on this host/],
      ["moat-9-", /another moat orchestrator \(pid \d+\) runs on this network namespace/],
    ] as const) {
      const result = await runCommand(
        [
          "nsenter",
          `--net=/run/netns/${node!.namespace}`,
          process.execPath,
          "packages/cli/bin/moat.js",
          "orchestrator",
          "--name-prefix",
          prefix,
          "--data-dir",
          secondDir,
          "--port",
          "5999",
        ],
        {
          timeoutMs: 60_000,
          env: { ...process.env, MOAT_CODE_INTERPRETER: "off", MOAT_NODE_TOKEN: fleet.nodeToken },
        },
      ).then(
        () => "",
        (err: Error) => err.message,
      );
      assert.match(result, expect, prefix);
    }
    await rm(secondDir, { recursive: true, force: true });
  });

  test("30 sandboxes created through either API spread over the three nodes; each answers on its node", async () => {
    // Six at a time: three nodes share this machine's two cores (the bench measures concurrency).
    const sandboxes = await mapLimit(Array.from({ length: 30 }), 6, (_, i) => create(i % 2));
    const where = await placement();
    const counts = new Map<string, number>();
    for (const sbx of sandboxes) {
      const node = where.get(sbx.sandboxId);
      assert.ok(node, `${sbx.sandboxId} is on no node`);
      counts.set(node, (counts.get(node) ?? 0) + 1);
    }
    assert.equal(counts.size, 3, `spread: ${JSON.stringify([...counts])}`);
    const most = Math.max(...counts.values());
    const fewest = Math.min(...counts.values());
    assert.ok(most <= Math.ceil(fewest * 1.5) + 1, `spread within 1.5×: ${JSON.stringify([...counts])}`);
    // Sandbox networking inside each host: envd answers at the sandbox's host address.
    for (const node of fleet.nodes) {
      const infos = (await node.client.list({})).sandboxes.filter((i) => i.hostAddress !== "");
      const answers = await envdHealth(
        node.index,
        infos.map((i) => i.hostAddress),
      );
      assert.deepEqual(
        answers,
        infos.map(() => 204),
        node.id,
      );
    }
    await Promise.all(sandboxes.slice(10).map((s) => s.kill().then(() => made.delete(s.sandboxId))));
  });

  test("commands, files and a port on sandboxes of every node, through either proxy", async (t) => {
    if (!fleet.features.routing) return t.skip(NEEDS_ROUTING);
    const where = await placement();
    const byNode = new Map<string, string>();
    for (const id of made) if (where.get(id) && !byNode.has(where.get(id)!)) byNode.set(where.get(id)!, id);
    assert.equal(byNode.size, 3);
    let i = 0;
    for (const [node, id] of byNode) {
      const proxy = i++ % 2;
      const sbx = await Sandbox.connect(id, fleet.sdk(proxy, proxy));
      const run = await sbx.commands.run("echo hello from $(hostname)");
      assert.match(run.stdout, /hello from/, node);
      await sbx.files.write("/home/user/fleet.txt", `on ${node}`);
      assert.equal(await sbx.files.read("/home/user/fleet.txt"), `on ${node}`);
      await sbx.commands.run("python3 -m http.server 8080 --directory /home/user", { background: true });
      const url = `http://${sbx.getHost(8080)}`;
      // Through the other proxy too: any proxy finds any sandbox.
      for (const base of fleet.proxyURLs) {
        const res = await fetchSandboxPort(base, url, "fleet.txt");
        assert.equal(res, `on ${node}`, `${node} via ${base}`);
      }
    }
  });

  test("a template built once starts on every node", async (t) => {
    if (!fleet.features.routing || !fleet.features.artifacts)
      return t.skip(`${NEEDS_ROUTING}; ${NEEDS_ARTIFACTS}`);
    const template = Template().fromBaseImage().runCmd("echo built-once > /home/user/built.txt");
    await Template.build(template, "fleet-once", { ...fleet.sdk(0), cpuCount: 1, memoryMB: 512 });
    // One create per node: the other two drained meanwhile, so placement has one choice.
    const sandboxes: Sandbox[] = [];
    for (const node of fleet.nodes) {
      const others = fleet.nodes.filter((n) => n !== node);
      for (const other of others) await setStatus(other.id, "draining");
      try {
        const sbx = await create(node.index % 2, "fleet-once");
        sandboxes.push(sbx);
        assert.equal((await placement()).get(sbx.sandboxId), node.id);
      } finally {
        for (const other of others) await setStatus(other.id, "ready");
      }
    }
    for (const sbx of sandboxes) {
      assert.equal((await sbx.commands.run("cat /home/user/built.txt")).stdout.trim(), "built-once");
      await sbx.kill();
      made.delete(sbx.sandboxId);
    }
  });

  test("a drained node gets no new sandboxes; its sandboxes keep working", async (t) => {
    if (!fleet.features.registration || !fleet.features.routing)
      return t.skip(`${NEEDS_NODES}; ${NEEDS_ROUTING}`);
    const drained = fleet.nodes[1]!;
    const before = (await fleet.sandboxesByNode()).get(drained.id) ?? [];
    assert.ok(before.length > 0, "the node has sandboxes to keep");
    await setStatus(drained.id, "draining");
    try {
      const fresh = await Promise.all(Array.from({ length: 6 }, (_, i) => create(i % 2)));
      const where = await placement();
      for (const sbx of fresh) assert.notEqual(where.get(sbx.sandboxId), drained.id);
      const kept = await Sandbox.connect(before[0]!, fleet.sdk(1, 1));
      assert.equal((await kept.commands.run("echo still")).stdout.trim(), "still");
      await Promise.all(fresh.map((s) => s.kill().then(() => made.delete(s.sandboxId))));
    } finally {
      await setStatus(drained.id, "ready");
    }
  });

  test("a node killed and restarted rejoins and is reconciled: its sandboxes adopted, creates placed on it again", async () => {
    const node = fleet.nodes[2]!;
    // Sandboxes of its own (not the earlier tests'): made until one is on the node.
    for (let i = 0; i < 6; i++) {
      const sbx = await create(i % 2);
      if ((await placement()).get(sbx.sandboxId) === node.id) break;
    }
    // Those the API lists as running (a create the API gave up on may have left one it kills).
    const running = new Set((await Sandbox.list(fleet.sdk(0)).nextItems()).map((s) => s.sandboxId));
    const onNode = ((await fleet.sandboxesByNode()).get(node.id) ?? []).filter((id) => running.has(id));
    assert.ok(onNode.length > 0, "the node has sandboxes");
    await fleet.killNode(node.index, "SIGKILL");
    if (fleet.features.registration) {
      // Health: creates go elsewhere while it is gone.
      const during = await Promise.all(Array.from({ length: 3 }, (_, i) => create(i % 2)));
      const where = await placement();
      for (const sbx of during) assert.notEqual(where.get(sbx.sandboxId), node.id);
    }
    await fleet.restartNode(node.index);
    // Its sandboxes survived its death and were adopted by the new process.
    const after = (await fleet.sandboxesByNode()).get(node.id) ?? [];
    for (const id of onNode) assert.ok(after.includes(id), `${id} adopted`);
    const infos = (await node.client.list({})).sandboxes.filter((i) => i.hostAddress !== "");
    assert.deepEqual(
      await envdHealth(
        node.index,
        infos.map((i) => i.hostAddress),
      ),
      infos.map(() => 204),
    );
    // The API sees them running, and places new creates on the node again.
    for (const id of onNode) {
      const info = await Sandbox.getInfo(id, fleet.sdk(0));
      assert.equal(info.state, "running", id);
    }
    const deadline = Date.now() + 60_000;
    for (;;) {
      const fresh = await Promise.all(Array.from({ length: 3 }, (_, i) => create(i % 2)));
      const where = await placement();
      if (fresh.some((s) => where.get(s.sandboxId) === node.id)) break;
      assert.ok(Date.now() < deadline, "no create reached the restarted node");
    }
  });

  test("a sandbox paused on node A resumes on node B after A is SIGKILLed", async (t) => {
    if (!fleet.features.registration || !fleet.features.artifacts || !fleet.features.routing)
      return t.skip(`${NEEDS_NODES}; ${NEEDS_ARTIFACTS}; ${NEEDS_ROUTING}`);
    const sbx = await create(0);
    await sbx.files.write("/home/user/kept.txt", "kept across nodes");
    const nodeA = (await placement()).get(sbx.sandboxId)!;
    await sbx.pause();
    const a = fleet.nodes.find((n) => n.id === nodeA)!;
    await fleet.killNode(a.index, "SIGKILL");
    try {
      const resumed = await Sandbox.connect(sbx.sandboxId, fleet.sdk(1, 1));
      assert.equal(await resumed.files.read("/home/user/kept.txt"), "kept across nodes");
      const nodeB = (await placement()).get(sbx.sandboxId);
      assert.ok(nodeB && nodeB !== nodeA, `resumed on another node (${nodeB})`);
    } finally {
      await fleet.restartNode(a.index);
    }
  });

  test("an API process killed mid-create leaves nothing half-made", async (t) => {
    // With a shared database a create whose API died stays "starting" until STALE_CREATE_MS (5 min)
    // today, and its sandbox runs on unlisted until then.
    if (!fleet.features.registration) return t.skip(`${NEEDS_NODES}: creates of a dead API process settled`);
    const creating = Array.from({ length: 6 }, () =>
      Sandbox.create({ ...fleet.sdk(1, 1), timeoutMs: 300_000 }).then(
        (s) => made.add(s.sandboxId),
        () => undefined,
      ),
    );
    // Mid-create: the requests are in, the nodes busy booting.
    await new Promise((r) => setTimeout(r, 300));
    await fleet.killAPI(1, "SIGKILL");
    await Promise.all(creating);
    await fleet.restartAPI(1);
    // Settled: every sandbox a node runs is one the API lists as running, and every one it lists
    // runs on a node; nothing stays "starting".
    const deadline = Date.now() + 90_000;
    let problems: string[] = [];
    do {
      problems = [];
      const onNodes = await placement();
      const listed = await Sandbox.list(fleet.sdk(0)).nextItems();
      const running = new Set(listed.map((s) => s.sandboxId));
      for (const id of onNodes.keys())
        if (!running.has(id)) problems.push(`${id} runs on a node but is not listed`);
      for (const id of running) if (!onNodes.has(id)) problems.push(`${id} is listed but on no node`);
      if (problems.length === 0) break;
      await new Promise((r) => setTimeout(r, 2000));
    } while (Date.now() < deadline);
    assert.deepEqual(problems, []);
  });
});

/** GET a sandbox port's file through a proxy, naming the sandbox host in the Host header. */
async function fetchSandboxPort(proxyBase: string, sandboxURL: string, file: string): Promise<string> {
  const host = new URL(sandboxURL).host;
  const proxy = new URL(proxyBase);
  const deadline = Date.now() + 20_000;
  for (;;) {
    const res = await new Promise<{ status: number; body: string }>((resolve, reject) => {
      const req = http.get(
        { host: proxy.hostname, port: proxy.port, path: `/${file}`, headers: { host }, timeout: 10_000 },
        (r) => {
          let body = "";
          r.setEncoding("utf8");
          r.on("data", (c: string) => {
            body += c;
          });
          r.on("end", () => resolve({ status: r.statusCode ?? 0, body }));
        },
      );
      req.once("timeout", () => req.destroy(new Error("timed out")));
      req.once("error", reject);
    }).catch(() => undefined);
    if (res?.status === 200) return res.body;
    if (Date.now() > deadline) throw new Error(`port never answered: ${res?.status}`);
    await new Promise((r) => setTimeout(r, 300));
  }
}
