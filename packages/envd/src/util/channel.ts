import { ConnectError } from "@connectrpc/connect";

export type Pulled<T> = { kind: "value"; value: T } | { kind: "idle" } | { kind: "done" };

/**
 * A single-consumer queue bridging event emitters to an RPC stream. `pull` waits for the next
 * value, for `idleMs` without one (so the stream can send a keepalive), or for the end; an aborted
 * signal rejects it with the signal's reason as a ConnectError.
 *
 * The queue itself is unbounded: a producer that can wait (process output) pushes each value with
 * its size and pauses while `bytes` is high, resuming from `onPull` once the consumer caught up.
 */
export class Channel<T> {
  private readonly queue: Array<{ value: T; size: number }> = [];
  private queued = 0;
  private closed = false;
  private wake: (() => void) | undefined;
  /** Called each time the consumer took a value (room was made). */
  onPull: (() => void) | undefined;

  /** Bytes of the values waiting, as their producers sized them. */
  get bytes(): number {
    return this.queued;
  }

  push(value: T, size = 0): void {
    if (this.closed) return;
    this.queue.push({ value, size });
    this.queued += size;
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
      const next = this.queue.shift();
      if (next) {
        this.queued -= next.size;
        this.onPull?.();
        return { kind: "value", value: next.value };
      }
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
