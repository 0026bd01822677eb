import { recordSpan } from "@moat/shared/telemetry";

/**
 * Per-phase durations of a create, pause, resume or kill, for the log line that ends it; with
 * tracing on, each phase is a span too (`phase.<name>`, a child of the operation's).
 */
export function phaseTimer(): {
  lap: (phase: string) => void;
  done: () => { totalMs: number; [phase: string]: number };
} {
  const started = performance.now();
  const timings: Record<string, number> = {};
  let mark = started;
  return {
    lap(phase) {
      const now = performance.now();
      recordSpan("orchestrator", `phase.${phase}`, mark, now);
      timings[phase] = Math.round(now - mark);
      mark = now;
    },
    done: () => ({ totalMs: Math.round(performance.now() - started), ...timings }),
  };
}

export function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
