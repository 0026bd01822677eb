/** The node's queue of boots (sandbox/create-queue.ts): turns, fairness, bound and timeout. */
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { CreateQueue } from "../src/sandbox/create-queue.js";
import { CreateQueueTimeoutError, NodeBusyError } from "../src/sandbox/errors.js";

const tick = () => new Promise((r) => setImmediate(r));

/** Enqueues `team`'s boot `name`; what was granted goes onto `order` with its release. */
function enqueue(
  queue: CreateQueue,
  team: string,
  name: string,
  order: string[],
  releases: Map<string, () => void>,
) {
  return queue.acquire(team).then((release) => {
    order.push(name);
    releases.set(name, release);
  });
}

describe("create queue", () => {
  test("up to `concurrency` at once; the others wait and get the turns that free up", async () => {
    const queue = new CreateQueue({ concurrency: 2, maxQueued: 10, maxWaitMs: 10_000 });
    const order: string[] = [];
    const releases = new Map<string, () => void>();
    for (const name of ["a1", "a2", "a3", "a4"]) void enqueue(queue, "a", name, order, releases);
    await tick();
    assert.deepEqual(order, ["a1", "a2"]);
    assert.equal(queue.active, 2);
    assert.equal(queue.waiting, 2);
    releases.get("a1")!();
    releases.get("a1")!(); // a second call gives nothing back twice
    await tick();
    assert.deepEqual(order, ["a1", "a2", "a3"]);
    assert.equal(queue.active, 2);
    releases.get("a2")!();
    releases.get("a3")!();
    await tick();
    assert.deepEqual(order, ["a1", "a2", "a3", "a4"]);
    releases.get("a4")!();
    assert.equal(queue.active, 0);
    assert.equal(queue.waiting, 0);
  });

  test("turns alternate between teams, first come first served within each", async () => {
    const queue = new CreateQueue({ concurrency: 1, maxQueued: 10, maxWaitMs: 10_000 });
    const order: string[] = [];
    const releases = new Map<string, () => void>();
    // Team a bursts five; team b asks for two after them.
    for (const name of ["a1", "a2", "a3", "a4", "a5"]) void enqueue(queue, "a", name, order, releases);
    for (const name of ["b1", "b2"]) void enqueue(queue, "b", name, order, releases);
    await tick();
    for (let i = 0; i < 7; i++) {
      const last = order[order.length - 1]!;
      releases.get(last)!();
      await tick();
    }
    assert.deepEqual(order, ["a1", "a2", "b1", "a3", "b2", "a4", "a5"]);
  });

  test("a newcomer waits behind those waiting even when a turn is free at that moment", async () => {
    const queue = new CreateQueue({ concurrency: 1, maxQueued: 10, maxWaitMs: 10_000 });
    const order: string[] = [];
    const releases = new Map<string, () => void>();
    void enqueue(queue, "a", "a1", order, releases);
    void enqueue(queue, "a", "a2", order, releases);
    await tick();
    releases.get("a1")!();
    // a2 was granted synchronously by the release: a newcomer cannot overtake it.
    void enqueue(queue, "b", "b1", order, releases);
    await tick();
    assert.deepEqual(order, ["a1", "a2"]);
    releases.get("a2")!();
    await tick();
    assert.deepEqual(order, ["a1", "a2", "b1"]);
  });

  test("beyond maxQueued waiting, a boot is refused at once as node busy", async () => {
    const queue = new CreateQueue({ concurrency: 1, maxQueued: 2, maxWaitMs: 10_000 });
    const order: string[] = [];
    const releases = new Map<string, () => void>();
    for (const name of ["a1", "a2", "a3"]) void enqueue(queue, "a", name, order, releases);
    await tick();
    await assert.rejects(queue.acquire("b"), (err: unknown) => {
      assert.ok(err instanceof NodeBusyError);
      assert.match((err as Error).message, /node busy: 2 sandboxes waiting to start/);
      return true;
    });
    assert.equal(queue.waiting, 2);
    for (const name of ["a1", "a2", "a3"]) {
      releases.get(name)!();
      await tick();
    }
    assert.deepEqual(order, ["a1", "a2", "a3"]);
  });

  test("a boot that waits longer than maxWaitMs fails and leaves the queue", async () => {
    const queue = new CreateQueue({ concurrency: 1, maxQueued: 10, maxWaitMs: 30 });
    const order: string[] = [];
    const releases = new Map<string, () => void>();
    void enqueue(queue, "a", "a1", order, releases);
    const late = queue.acquire("b");
    await assert.rejects(late, (err: unknown) => {
      assert.ok(err instanceof CreateQueueTimeoutError);
      assert.ok(err instanceof NodeBusyError, "the API tries another node, or answers 429");
      assert.match((err as Error).message, /waited 0 s for a turn to start \(1 starting, 0 more waiting\)/);
      return true;
    });
    assert.equal(queue.waiting, 0);
    releases.get("a1")!();
    assert.equal(queue.active, 0, "the turn is not given to the boot that gave up");
  });

  test("a concurrency below 1 is a bug", () => {
    assert.throws(() => new CreateQueue({ concurrency: 0, maxQueued: 1, maxWaitMs: 1 }));
  });
});
