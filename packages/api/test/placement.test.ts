/**
 * Placement: the load score (pure), best-of-K with ties taken in turn, the nodes a create may go
 * to (ready, with the labels it needs), and the spread of a burst of creates over equal nodes
 * whose load updates as the records and heartbeats would.
 */
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import type { NodeInfo } from "../src/nodes/info.js";
import {
  BestOfKPlacement,
  buildNodes,
  eligibleNodes,
  type PlacementNode,
  type PlacementRequest,
  placeSandbox,
} from "../src/placement/placement.js";
import { CACHED_BONUS, POOL_BONUS, scoreNode } from "../src/placement/score.js";

function info(overrides: Partial<NodeInfo> = {}): NodeInfo {
  return {
    status: "ready",
    static: false,
    labels: [],
    builds: new Set(),
    capacity: { cpus: 4, memoryMB: 8192 },
    load: { cpuPercent: 0, memoryUsedMB: 0, sandboxes: 0, starting: 0, poolReady: 0 },
    allocated: { cpus: 0, memoryMB: 0, sandboxes: 0 },
    ...overrides,
  };
}

const request: PlacementRequest = { cpuCount: 2, memoryMB: 512 };

describe("placement score", () => {
  test("E2B's CPU term: (requested + allocated + half the CPU in use) over R·cpus, plus memory and count", () => {
    const idle = scoreNode(info(), request);
    // 2 / (4·4) + 512 / 8192
    assert.equal(idle, 2 / 16 + 512 / 8192);
    const busy = scoreNode(
      info({ load: { cpuPercent: 50, memoryUsedMB: 0, sandboxes: 0, starting: 0, poolReady: 0 } }),
      request,
    );
    // Half of 4 cores in use counts half: + 1 / 16.
    assert.equal(busy, idle + 1 / 16);
    const allocated = scoreNode(info({ allocated: { cpus: 4, memoryMB: 1024, sandboxes: 2 } }), request);
    assert.equal(allocated, (2 + 4) / 16 + (512 + 1024) / 8192 + (0.25 * 2) / 16);
  });

  test("a bigger node scores lower for the same load", () => {
    const small = scoreNode(info({ allocated: { cpus: 4, memoryMB: 2048, sandboxes: 4 } }), request);
    const big = scoreNode(
      info({ capacity: { cpus: 16, memoryMB: 65536 }, allocated: { cpus: 4, memoryMB: 2048, sandboxes: 4 } }),
      request,
    );
    assert.ok(big < small);
  });

  test("a node with the template's build cached gets a bonus, more with its pool ready", () => {
    const withBuild = { ...request, buildID: "b1" };
    const plain = scoreNode(info(), withBuild);
    const cached = scoreNode(info({ builds: new Set(["b1"]) }), withBuild);
    const pooled = scoreNode(
      info({
        builds: new Set(["b1"]),
        load: { cpuPercent: 0, memoryUsedMB: 0, sandboxes: 0, starting: 0, poolReady: 2 },
      }),
      withBuild,
    );
    assert.equal(plain - cached, CACHED_BONUS);
    assert.ok(Math.abs(cached - pooled - POOL_BONUS) < 1e-12);
    // The pool alone, without the build, earns nothing.
    assert.equal(
      scoreNode(
        info({ load: { cpuPercent: 0, memoryUsedMB: 0, sandboxes: 0, starting: 0, poolReady: 5 } }),
        withBuild,
      ),
      plain,
    );
  });

  test("a node that reports nothing is scored by its allocation alone", () => {
    assert.ok(Number.isFinite(scoreNode(undefined, request)));
    const none = {
      status: "ready",
      static: true,
      labels: [],
      builds: new Set<string>(),
      allocated: { cpus: 0, memoryMB: 0, sandboxes: 0 },
    } as NodeInfo;
    assert.ok(
      scoreNode(none, request) <
        scoreNode({ ...none, allocated: { cpus: 2, memoryMB: 0, sandboxes: 1 } }, request),
    );
  });
});

describe("best-of-K placement", () => {
  const node = (id: string, i: NodeInfo = info()): PlacementNode & { info: NodeInfo } => ({ id, info: i });

  test("one node: always that one; equal nodes without requests: in turn (round-robin)", () => {
    const p = new BestOfKPlacement();
    const only = [node("a")];
    for (let i = 0; i < 5; i++) assert.equal(p.choose(only)?.id, "a");
    const equal = [node("a"), node("b"), node("c")];
    const fresh = new BestOfKPlacement();
    assert.deepEqual(
      Array.from({ length: 6 }, () => fresh.choose(equal)?.id),
      ["a", "b", "c", "a", "b", "c"],
    );
  });

  test("the least loaded of the sample wins", () => {
    const p = new BestOfKPlacement();
    const nodes = [
      node("busy", info({ allocated: { cpus: 8, memoryMB: 4096, sandboxes: 8 } })),
      node("idle"),
      node("half", info({ allocated: { cpus: 4, memoryMB: 2048, sandboxes: 4 } })),
    ];
    assert.equal(p.choose(nodes, request)?.id, "idle");
  });

  test("K of many: only sampled nodes are scored", () => {
    // random() = 0 samples indexes 0, then retries until 3 distinct: a deterministic sequence.
    const seq = [0.0, 0.2, 0.4];
    let i = 0;
    const p = new BestOfKPlacement(3, () => seq[i++ % seq.length]!);
    const nodes = Array.from({ length: 10 }, (_, n) =>
      node(`n${n}`, info({ allocated: { cpus: 10 - n, memoryMB: 0, sandboxes: 0 } })),
    );
    // Sampled: n0, n2, n4; the least loaded of them is n4 (n9 is better but not sampled).
    assert.equal(p.choose(nodes, request)?.id, "n4");
  });

  test("creates go only to ready nodes that carry the labels they need, and not twice to one", () => {
    const nodes = [
      node("ready"),
      node("draining", info({ status: "draining" })),
      node("unhealthy", info({ status: "unhealthy" })),
      node("builder", info({ labels: ["build"] })),
    ];
    assert.deepEqual(
      eligibleNodes(nodes, new Set(), []).map((n) => n.id),
      ["ready", "builder"],
    );
    assert.deepEqual(
      eligibleNodes(nodes, new Set(), ["build"]).map((n) => n.id),
      ["builder"],
    );
    assert.deepEqual(
      eligibleNodes(nodes, new Set(["ready"]), []).map((n) => n.id),
      ["builder"],
    );
    assert.equal(placeSandbox(new BestOfKPlacement(), [nodes[1]!, nodes[2]!], new Set(), request), undefined);
  });

  test("30 creates over 3 equal nodes spread within 1.5x, as their load updates", () => {
    let clock = 0;
    const p = new BestOfKPlacement(3, Math.random, () => clock);
    // Equal nodes, but what they report is never exactly equal.
    const nodes = ["a", "b", "c"].map((id, i) =>
      node(
        id,
        info({ load: { cpuPercent: 1 + i, memoryUsedMB: 0, sandboxes: 0, starting: 0, poolReady: 0 } }),
      ),
    );
    const placed = new Map<string, number>(nodes.map((n) => [n.id, 0]));
    // What the registry does every second: the records' allocation and the heartbeats' load.
    const refresh = () => {
      for (const [i, n] of nodes.entries()) {
        const count = placed.get(n.id)!;
        n.info = {
          ...n.info,
          allocated: { cpus: count * request.cpuCount, memoryMB: count * request.memoryMB, sandboxes: count },
          allocatedAt: new Date(clock),
          load: {
            cpuPercent: 1 + i + count,
            memoryUsedMB: count * 200,
            sandboxes: count,
            starting: 0,
            poolReady: 0,
          },
        };
      }
    };
    // Two bursts of 15 concurrent creates: each placed before any of them ends or is read back.
    for (let burst = 0; burst < 2; burst++) {
      const inFlight: Array<{ node: string; req: PlacementRequest }> = [];
      for (let i = 0; i < 15; i++) {
        const req = { ...request };
        const chosen = p.choose(nodes, req)!;
        placed.set(chosen.id, placed.get(chosen.id)! + 1);
        inFlight.push({ node: chosen.id, req });
      }
      clock += 500;
      for (const f of inFlight) p.finished(f.node, f.req, true);
      clock += 1000;
      refresh();
    }
    const counts = [...placed.values()];
    const most = Math.max(...counts);
    const fewest = Math.min(...counts);
    assert.ok(fewest > 0 && most / fewest <= 1.5, `spread ${counts.join("/")}`);
  });

  test("template builds go to the ready nodes labelled build, else anywhere", () => {
    const plain = node("plain");
    const builder = node("builder", info({ labels: ["build"] }));
    const drainingBuilder = node("old-builder", info({ labels: ["build"], status: "draining" }));
    assert.deepEqual(
      buildNodes([plain, builder, drainingBuilder]).map((n) => n.id),
      ["builder"],
    );
    assert.deepEqual(
      buildNodes([plain, drainingBuilder]).map((n) => n.id),
      ["plain", "old-builder"],
      "no ready builder: every node (placement then skips the draining one)",
    );
  });

  test("a create that failed no longer counts on its node", () => {
    const p = new BestOfKPlacement();
    const nodes = [node("a"), node("b")];
    const first = { ...request };
    assert.equal(p.choose(nodes, first)?.id, "a");
    p.finished("a", first, false);
    // Nothing pending on a: the tie goes on in turn (b), then a is as empty as b again.
    assert.equal(p.choose(nodes, { ...request })?.id, "b");
    assert.equal(p.choose(nodes, { ...request })?.id, "a");
  });
});
