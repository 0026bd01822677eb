/**
 * The node's queue of boots (creates and resumes that restore or start a sandbox): at most
 * `concurrency` run at once, since restores are CPU-bound and more at once only slows them all;
 * the others wait their turn instead of being refused. Turns are fair between teams (round-robin
 * over the teams waiting) and first come, first served within a team. Beyond `maxQueued` waiting,
 * a boot is refused (NodeBusyError: the API answers 429 with Retry-After); one that waits longer
 * than `maxWaitMs` gives up with CreateQueueTimeoutError.
 */
import { CreateQueueTimeoutError, NodeBusyError } from "./errors.js";

/** Creates and resumes waiting for a turn at most, unless the node says otherwise. */
export const DEFAULT_MAX_QUEUED = 256;
/** How long a create or resume waits for its turn, unless the node says otherwise (under the SDK's 60 s request timeout). */
export const DEFAULT_QUEUE_TIMEOUT_MS = 45_000;

export interface CreateQueueOptions {
  /** Boots at once. */
  concurrency: number;
  /** Boots waiting at most; more are refused. */
  maxQueued: number;
  /** How long a boot may wait for its turn. */
  maxWaitMs: number;
}

interface Waiter {
  team: string;
  grant: (release: () => void) => void;
  timer: NodeJS.Timeout;
}

export class CreateQueue {
  private running = 0;
  private queued = 0;
  /** Waiters per team; the map's order is the teams' turn order (a served team goes last). */
  private readonly teams = new Map<string, Waiter[]>();

  constructor(private readonly options: CreateQueueOptions) {
    if (!(options.concurrency >= 1)) throw new Error("the create queue needs a concurrency of at least 1");
  }

  /** Boots running now. */
  get active(): number {
    return this.running;
  }

  /** Boots waiting for their turn. */
  get waiting(): number {
    return this.queued;
  }

  /**
   * Waits for a turn for `team`; resolves with the function that ends it (call it exactly once,
   * when the boot is done or failed). Refused at once when the queue is full.
   */
  acquire(team: string): Promise<() => void> {
    const { options } = this;
    if (this.running < options.concurrency && this.queued === 0) {
      this.running++;
      return Promise.resolve(this.releaser());
    }
    if (this.queued >= options.maxQueued) {
      return Promise.reject(
        new NodeBusyError(`${this.queued} sandboxes waiting to start, the most this node queues`),
      );
    }
    return new Promise((resolve, reject) => {
      const waiter: Waiter = {
        team,
        grant: resolve,
        timer: setTimeout(() => {
          if (!this.remove(waiter)) return;
          reject(new CreateQueueTimeoutError(options.maxWaitMs, this.running, this.queued));
        }, options.maxWaitMs),
      };
      const line = this.teams.get(team);
      if (line) line.push(waiter);
      else this.teams.set(team, [waiter]);
      this.queued++;
    });
  }

  private releaser(): () => void {
    let released = false;
    return () => {
      if (released) return;
      released = true;
      this.running--;
      this.next();
    };
  }

  /** Gives freed turns to the next waiters: the first team in turn order, its oldest boot. */
  private next(): void {
    while (this.running < this.options.concurrency && this.queued > 0) {
      const [team, line] = this.teams.entries().next().value as [string, Waiter[]];
      const waiter = line.shift()!;
      this.teams.delete(team);
      // Served: the team waits behind every other team for its next turn.
      if (line.length > 0) this.teams.set(team, line);
      this.queued--;
      clearTimeout(waiter.timer);
      this.running++;
      waiter.grant(this.releaser());
    }
  }

  private remove(waiter: Waiter): boolean {
    const line = this.teams.get(waiter.team);
    const index = line?.indexOf(waiter) ?? -1;
    if (!line || index < 0) return false;
    line.splice(index, 1);
    if (line.length === 0) this.teams.delete(waiter.team);
    this.queued--;
    return true;
  }
}
