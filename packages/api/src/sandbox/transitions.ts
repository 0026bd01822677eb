/**
 * The pauses and resumes this API process has in flight, at most one per sandbox. A request that
 * finds one joins it (a connect waits for the resume under way and shares its outcome) or is
 * refused (a pause during a resume), so that one sandbox never gets two Pause or Resume calls from
 * here. Between API processes, the conditional state updates of the records decide instead.
 *
 * The node watcher consults it too: the outcome of a transition in flight here is recorded by the
 * transition itself, so the node's PAUSED and RESUMED events for it are left alone.
 */
import type { SandboxRow } from "../db/schema.js";

export type TransitionKind = "pause" | "resume";

export interface Transition {
  readonly kind: TransitionKind;
  /** The record once the transition is done; rejects as the transition does. */
  readonly done: Promise<SandboxRow>;
  /** Resolves when the transition ended, either way. */
  readonly settled: Promise<void>;
}

export class SandboxTransitions {
  private readonly inFlight = new Map<string, Transition>();

  get(sandboxID: string): Transition | undefined {
    return this.inFlight.get(sandboxID);
  }

  /**
   * Runs `work` as the sandbox's transition, or answers undefined (running nothing) when one is
   * in flight already. The check and the registration happen together, before `work` starts, so
   * callers that checked `get` in the same tick cannot both start one.
   */
  start(sandboxID: string, kind: TransitionKind, work: () => Promise<SandboxRow>): Transition | undefined {
    if (this.inFlight.has(sandboxID)) return undefined;
    const done = Promise.resolve().then(work);
    const release = () => {
      if (this.inFlight.get(sandboxID) === transition) this.inFlight.delete(sandboxID);
    };
    // Released before anyone awaiting `settled` or `done` resumes: they find the slot free.
    const transition: Transition = { kind, done, settled: done.then(release, release) };
    this.inFlight.set(sandboxID, transition);
    return transition;
  }
}
