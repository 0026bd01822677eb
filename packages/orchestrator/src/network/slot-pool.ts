import { MAX_SLOTS, Slot } from "./slot.js";

/**
 * How long a freed slot rests before reuse. Clients keep pooled keep-alive connections to a
 * sandbox's host address; a new sandbox on the same address right away would inherit their stale
 * sockets and fail its first requests.
 */
export const SLOT_REUSE_DELAY_MS = 60_000;

/**
 * Hands out slot indexes: never-used ones first, then freed ones that rested long enough, and only
 * when the node is otherwise full, the longest-rested freed one.
 */
export class SlotPool {
  private readonly inUse = new Set<number>();
  /** Freed indexes, oldest release first. */
  private readonly free: Array<{ index: number; releasedAt: number }> = [];
  private next = 1;

  constructor(
    private readonly capacity = MAX_SLOTS,
    private readonly reuseDelayMs = SLOT_REUSE_DELAY_MS,
    private readonly now = () => Date.now(),
  ) {}

  acquire(): Slot {
    let index: number | undefined;
    const rested = this.free[0] && this.now() - this.free[0].releasedAt >= this.reuseDelayMs;
    if (rested) index = this.free.shift()!.index;
    else {
      while (this.inUse.has(this.next)) this.next++;
      if (this.next <= this.capacity) index = this.next++;
      else index = this.free.shift()?.index;
    }
    if (index === undefined) throw new Error("no free network slot: the node is full");
    this.inUse.add(index);
    return new Slot(index);
  }

  /** Marks a slot taken by a sandbox adopted after a restart. */
  claim(index: number): Slot {
    this.inUse.add(index);
    const i = this.free.findIndex((f) => f.index === index);
    if (i !== -1) this.free.splice(i, 1);
    return new Slot(index);
  }

  release(slot: Slot): void {
    if (this.inUse.delete(slot.index)) this.free.push({ index: slot.index, releasedAt: this.now() });
  }

  get used(): number {
    return this.inUse.size;
  }
}
