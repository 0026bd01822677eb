import { MAX_SLOTS, Slot } from "./slot.js";

/**
 * Hands out slot indexes. Freed indexes go to the back of the queue, so a slot whose namespaces
 * are still being torn down is not reused at once.
 */
export class SlotPool {
  private readonly inUse = new Set<number>();
  private readonly free: number[] = [];
  private next = 1;

  constructor(private readonly capacity = MAX_SLOTS) {}

  acquire(): Slot {
    let index = this.free.shift();
    if (index === undefined) {
      while (this.inUse.has(this.next)) this.next++;
      if (this.next > this.capacity) throw new Error("no free network slot: the node is full");
      index = this.next++;
    }
    this.inUse.add(index);
    return new Slot(index);
  }

  /** Marks a slot taken by a sandbox adopted after a restart. */
  claim(index: number): Slot {
    this.inUse.add(index);
    const i = this.free.indexOf(index);
    if (i !== -1) this.free.splice(i, 1);
    return new Slot(index);
  }

  release(slot: Slot): void {
    if (this.inUse.delete(slot.index)) this.free.push(slot.index);
  }

  get used(): number {
    return this.inUse.size;
  }
}
