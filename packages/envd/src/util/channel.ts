import { ConnectError } from "@connectrpc/connect";

export type Pulled<T> = { kind: "value"; value: T } | { kind: "idle" } | { kind: "done" };

/**
 * An unbounded single-consumer queue bridging event emitters to an RPC stream. `pull` waits for the
 * next value, for `idleMs` without one (so the stream can send a keepalive), or for the end; an
 * aborted signal rejects it with the signal's reason as a ConnectError.
 */
export class Channel<T> {
  private readonly queue: T[] = [];
  private closed = false;
  private wake: (() => void) | undefined;

  push(value: T): void {
    if (this.closed) return;
    this.queue.push(value);
    this.wake?.();
  }

  /** Ends the channel; values already queued are still delivered. */
  close(): void {
    this.closed = true;
    this.wake?.();
  }

  async pull(signal: AbortSignal, idleMs: number): Promise<Pulled<T>> {
    for (;;) {
      if (signal.aborted) throw ConnectError.from(signal.reason);
      if (this.queue.length > 0) return { kind: "value", value: this.queue.shift()! };
      if (this.closed) return { kind: "done" };
      const woke = await new Promise<boolean>((resolve) => {
        const timer = setTimeout(() => finish(false), idleMs);
        const onAbort = () => finish(true);
        const finish = (value: boolean) => {
          clearTimeout(timer);
          signal.removeEventListener("abort", onAbort);
          this.wake = undefined;
          resolve(value);
        };
        this.wake = () => finish(true);
        signal.addEventListener("abort", onAbort, { once: true });
      });
      if (!woke) return { kind: "idle" };
    }
  }
}
