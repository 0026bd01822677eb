/**
 * A push-to-pull channel: producers (event emitters, callbacks) push values, one consumer at a
 * time takes them in order, by `for await` or by `pull` (which also answers "idle" after a quiet
 * spell, for streams that send keepalives).
 *
 * Slow consumers: the channel is unbounded; it drops nothing the consumer may still take.
 * Producers that can wait push each value with a size and pause while `bytes` is high, resuming
 * from `onTake`; those whose values are few (sandbox events, build logs) push freely.
 *
 * Ends: `close()` lets the consumer take what is queued, then ends the iteration (or, with an
 * error, throws it there). `cancel()`, a `break` out of `for await` (the iterator's return()) or
 * the abort of `signal` end it at once: what is queued is dropped. Either way `onEnd` runs once, and
 * values pushed afterwards are ignored (push answers false).
 */

export type Pulled<T> = { kind: "value"; value: T } | { kind: "idle" } | { kind: "done" };

export interface ChannelOptions {
  /** Called each time the consumer took a value (room was made for sized pushes). */
  onTake?: () => void;
  /** Called once when the channel ended: closed and drained, or cancelled. */
  onEnd?: () => void;
  /** Cancels the channel when it aborts (at once if it already has): the consumer went away. */
  signal?: AbortSignal;
}

export class Channel<T> implements AsyncIterable<T> {
  private readonly queue: Array<{ value: T; size: number }> = [];
  private queued = 0;
  /** Set by close() or cancel(): nothing more is accepted. */
  private closed = false;
  private failure: { error: unknown } | undefined;
  private ended = false;
  private wake: (() => void) | undefined;
  private readonly options: ChannelOptions;
  private readonly onAbort = () => this.cancel();

  constructor(options: ChannelOptions = {}) {
    this.options = options;
    if (options.signal?.aborted) this.cancel();
    else options.signal?.addEventListener("abort", this.onAbort, { once: true });
  }

  /** Bytes of the values waiting, as their producers sized them. */
  get bytes(): number {
    return this.queued;
  }

  /** Queues a value; false (and the value is dropped) once the channel is closed or cancelled. */
  push(value: T, size = 0): boolean {
    if (this.closed) return false;
    this.queue.push({ value, size });
    this.queued += size;
    this.wake?.();
    return true;
  }

  /**
   * Ends the channel once the consumer took what is queued; with an error, the consumer's read
   * after the last value throws it. Only the first close or cancel counts.
   */
  close(error?: unknown): void {
    if (this.closed) return;
    this.closed = true;
    if (error !== undefined) this.failure = { error };
    if (this.queue.length === 0) this.end();
    this.wake?.();
  }

  /** Ends the channel at once: queued values are dropped and the consumer's next read is done. */
  cancel(): void {
    this.closed = true;
    this.failure = undefined;
    this.queue.length = 0;
    this.queued = 0;
    this.end();
    this.wake?.();
  }

  /**
   * The next value; "idle" when none came for `idleMs`, "done" at the end. Rejects with the close
   * error at the end of a failed channel, and with `signal`'s reason once it aborts (the channel
   * stays open: the consumer decides).
   */
  async pull(signal?: AbortSignal, idleMs?: number): Promise<Pulled<T>> {
    for (;;) {
      if (signal?.aborted) throw signal.reason;
      const next = this.queue.shift();
      if (next) {
        this.queued -= next.size;
        if (this.closed && this.queue.length === 0) this.end();
        this.options.onTake?.();
        return { kind: "value", value: next.value };
      }
      if (this.closed) {
        if (this.failure) {
          const { error } = this.failure;
          this.failure = undefined;
          throw error;
        }
        return { kind: "done" };
      }
      if (!(await this.waitForPush(signal, idleMs))) return { kind: "idle" };
    }
  }

  [Symbol.asyncIterator](): AsyncIterator<T> {
    return {
      next: async () => {
        const next = await this.pull();
        return next.kind === "value" ? { value: next.value, done: false } : { value: undefined, done: true };
      },
      return: async () => {
        this.cancel();
        return { value: undefined, done: true };
      },
    };
  }

  /** Waits for a push, the end or `signal`; false when `idleMs` passed first. */
  private waitForPush(signal: AbortSignal | undefined, idleMs: number | undefined): Promise<boolean> {
    return new Promise<boolean>((resolve) => {
      const timer = idleMs === undefined ? undefined : setTimeout(() => finish(false), idleMs);
      const onAbort = () => finish(true);
      const finish = (woke: boolean) => {
        clearTimeout(timer);
        signal?.removeEventListener("abort", onAbort);
        this.wake = undefined;
        resolve(woke);
      };
      this.wake = () => finish(true);
      signal?.addEventListener("abort", onAbort, { once: true });
    });
  }

  private end(): void {
    if (this.ended) return;
    this.ended = true;
    this.options.signal?.removeEventListener("abort", this.onAbort);
    this.options.onEnd?.();
  }
}
