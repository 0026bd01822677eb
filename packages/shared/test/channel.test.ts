/** The push-to-pull channel the RPC streams of envd and the orchestrator are made of. */
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { Channel } from "../src/async/channel.js";

async function drain<T>(channel: AsyncIterable<T>): Promise<T[]> {
  const out: T[] = [];
  for await (const value of channel) out.push(value);
  return out;
}

describe("Channel", () => {
  test("values arrive in push order, those pushed before and after the consumer waits alike", async () => {
    const channel = new Channel<number>();
    channel.push(1);
    channel.push(2);
    const all = drain(channel);
    await new Promise((resolve) => setImmediate(resolve));
    channel.push(3);
    channel.close();
    assert.deepEqual(await all, [1, 2, 3]);
  });

  test("close delivers what is queued, then ends; pushes after it are ignored", async () => {
    let ended = 0;
    const channel = new Channel<string>({ onEnd: () => ended++ });
    channel.push("a");
    channel.close();
    assert.equal(channel.push("late"), false);
    assert.equal(ended, 0, "not ended while a value waits");
    assert.deepEqual(await drain(channel), ["a"]);
    assert.equal(ended, 1);
    assert.deepEqual(await channel.pull(), { kind: "done" });
  });

  test("close with an error throws it after the queued values, once", async () => {
    const channel = new Channel<number>();
    channel.push(1);
    const boom = new Error("boom");
    channel.close(boom);
    channel.close(new Error("second close is ignored"));
    const seen: number[] = [];
    await assert.rejects(async () => {
      for await (const value of channel) seen.push(value);
    }, boom);
    assert.deepEqual(seen, [1]);
    assert.deepEqual(await channel.pull(), { kind: "done" });
  });

  test("a consumer that stops (break: return()) cancels: queued values dropped, onEnd runs", async () => {
    let ended = 0;
    const channel = new Channel<number>({ onEnd: () => ended++ });
    for (const n of [1, 2, 3]) channel.push(n);
    for await (const value of channel) {
      assert.equal(value, 1);
      break;
    }
    assert.equal(ended, 1);
    assert.equal(channel.bytes, 0);
    assert.equal(channel.push(4), false);
    assert.deepEqual(await channel.pull(), { kind: "done" });
    channel.close();
    assert.equal(ended, 1, "onEnd runs once");
  });

  test("the return() of a generator wrapping the channel reaches it, and the wrapper's finally runs", async () => {
    let cleaned = false;
    const channel = new Channel<number>();
    async function* wrapper() {
      try {
        yield* channel;
      } finally {
        cleaned = true;
      }
    }
    const stream = wrapper();
    channel.push(1);
    assert.deepEqual(await stream.next(), { value: 1, done: false });
    await stream.return(undefined);
    assert.ok(cleaned);
    assert.equal(channel.push(2), false, "the channel was cancelled");
  });

  test("cancel wakes a waiting consumer with the end", async () => {
    const channel = new Channel<number>();
    const next = channel.pull();
    channel.cancel();
    assert.deepEqual(await next, { kind: "done" });
  });

  test("signal: its abort cancels the channel, at once when it already aborted", async () => {
    const controller = new AbortController();
    let ended = 0;
    const channel = new Channel<number>({ signal: controller.signal, onEnd: () => ended++ });
    channel.push(1);
    const all = drain(channel);
    await new Promise((resolve) => setImmediate(resolve));
    controller.abort();
    assert.deepEqual(await all, [1]);
    assert.equal(ended, 1);
    const late = new Channel<number>({ signal: controller.signal });
    assert.equal(late.push(1), false);
  });

  test("pull: idle after idleMs without a value; a pull's own signal rejects with its reason", async () => {
    const channel = new Channel<number>();
    assert.deepEqual(await channel.pull(undefined, 5), { kind: "idle" });
    const controller = new AbortController();
    const next = channel.pull(controller.signal, 10_000);
    const reason = new Error("went away");
    controller.abort(reason);
    await assert.rejects(next, reason);
    channel.push(7);
    assert.deepEqual(await channel.pull(undefined, 5), { kind: "value", value: 7 }, "the channel stays open");
  });

  test("sized pushes count in bytes until taken; onTake follows each take", async () => {
    let taken = 0;
    const channel = new Channel<string>({ onTake: () => taken++ });
    channel.push("ab", 2);
    channel.push("cde", 3);
    assert.equal(channel.bytes, 5);
    await channel.pull();
    assert.equal(channel.bytes, 3);
    assert.equal(taken, 1);
    await channel.pull();
    assert.equal(channel.bytes, 0);
    assert.equal(taken, 2);
  });
});
