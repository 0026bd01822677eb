import { MAX_SLOTS, NAME_PREFIX, Slot } from "./slot.js";

/**
 * How long a freed slot rests before reuse. Clients keep pooled keep-alive connections to a
 * sandbox's host address; a new sandbox on the same address right away would inherit their stale
 * sockets and fail its first requests.
 */
export const SLOT_REUSE_DELAY_MS = 60_000;

/**
 * Hands out slot indexes: never-used ones first, then freed ones that rested long enough, and only
 * when the node is otherwise full, the longest-rested freed one. Never-used ones are taken in turn
 * from `first`, wrapping around: a restarted orchestrator does not know which slots its previous
 * run freed a moment ago, so it starts somewhere else (the manager picks `first` at random).
 */
export class SlotPool {
  private readonly inUse = new Set<number>();
  /** Freed indexes, oldest release first. */
  private readonly free: Array<{ index: number; releasedAt: number }> = [];
  private readonly freed = new Set<number>();
  private next: number;

  constructor(
    private readonly capacity = MAX_SLOTS,
    private readonly reuseDelayMs = SLOT_REUSE_DELAY_MS,
    private readonly now = () => Date.now(),
    first = 1,
    private readonly namePrefix = NAME_PREFIX,
  ) {
    this.next = Math.min(Math.max(1, first), capacity);
  }

  acquire(): Slot {
    let index: number | undefined;
    const rested = this.free[0] && this.now() - this.free[0].releasedAt >= this.reuseDelayMs;
    if (rested) index = this.takeFreed();
    else index = this.takeNeverUsed() ?? this.takeFreed();
    if (index === undefined) throw new Error("no free network slot: the node is full");
    this.inUse.add(index);
    return new Slot(index, this.namePrefix);
  }

  private takeNeverUsed(): number | undefined {
    for (let tried = 0; tried < this.capacity; tried++) {
      const index = this.next;
      this.next = index >= this.capacity ? 1 : index + 1;
      if (!this.inUse.has(index) && !this.freed.has(index)) return index;
    }
    return undefined;
  }

  private takeFreed(): number | undefined {
    const entry = this.free.shift();
    if (entry) this.freed.delete(entry.index);
    return entry?.index;
  }

  /** Marks a slot taken by a sandbox adopted after a restart. */
  claim(index: number): Slot {
    this.inUse.add(index);
    const i = this.free.findIndex((f) => f.index === index);
    if (i !== -1) this.free.splice(i, 1);
    this.freed.delete(index);
    return new Slot(index, this.namePrefix);
  }

  release(slot: Slot): void {
    if (!this.inUse.delete(slot.index)) return;
    this.free.push({ index: slot.index, releasedAt: this.now() });
    this.freed.add(slot.index);
  }

  get used(): number {
    return this.inUse.size;
  }
}
