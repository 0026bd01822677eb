/**
 * WatchEvents streams the manager's events in order; an aborted call ends the stream, and a
 * caller that stops reading unsubscribes it.
 */
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import type { HandlerContext } from "@connectrpc/connect";
import { SandboxEventType } from "@moat/shared/gen/orchestrator";
import type { SandboxEvent, SandboxManager } from "../src/sandbox/manager.js";
import { sandboxService } from "../src/server/sandbox-service.js";

function fakeManager() {
  const listeners = new Set<(event: SandboxEvent) => void>();
  const manager = {
    subscribe(listener: (event: SandboxEvent) => void) {
      listeners.add(listener);
      return () => listeners.delete(listener);
    },
  } as unknown as SandboxManager;
  const emit = (sandboxID: string) => {
    for (const l of listeners) l({ sandboxID, type: "killed", time: new Date(), reason: "" });
  };
  return { manager, listeners, emit };
}

function watch(manager: SandboxManager, signal: AbortSignal) {
  const service = sandboxService(manager);
  const stream = service.watchEvents!({} as never, { signal } as HandlerContext);
  return stream as AsyncGenerator<{ sandboxId: string; type: SandboxEventType }>;
}

const tick = () => new Promise((resolve) => setImmediate(resolve));

describe("WatchEvents", () => {
  test("the manager's events, in order, pushed before and while the stream waits", async () => {
    const { manager, emit } = fakeManager();
    const stream = watch(manager, new AbortController().signal);
    const first = stream.next();
    await tick();
    emit("a");
    emit("b");
    const a = await first;
    assert.equal(a.value?.sandboxId, "a");
    assert.equal(a.value?.type, SandboxEventType.KILLED);
    assert.equal((await stream.next()).value?.sandboxId, "b");
    const c = stream.next();
    await tick();
    emit("c");
    assert.equal((await c).value?.sandboxId, "c");
    await stream.return(undefined);
  });

  test("an aborted call ends the stream (what waits is dropped) and unsubscribes", async () => {
    const { manager, listeners, emit } = fakeManager();
    const abort = new AbortController();
    const stream = watch(manager, abort.signal);
    const first = stream.next();
    await tick();
    assert.equal(listeners.size, 1);
    emit("a");
    assert.equal((await first).value?.sandboxId, "a");
    emit("b");
    abort.abort();
    assert.deepEqual(await stream.next(), { value: undefined, done: true });
    assert.equal(listeners.size, 0);
  });

  test("a caller that stops reading unsubscribes", async () => {
    const { manager, listeners, emit } = fakeManager();
    const stream = watch(manager, new AbortController().signal);
    const first = stream.next();
    await tick();
    emit("a");
    await first;
    await stream.return(undefined);
    assert.equal(listeners.size, 0);
  });
});
