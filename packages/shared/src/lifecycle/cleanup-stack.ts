/**
 * A LIFO stack of release functions. Whoever acquires a resource pushes its release right after;
 * `run()` releases everything in reverse order exactly once, keeps going past failures and throws
 * them together at the end. Creation code runs the stack when a later step fails.
 */
export class CleanupStack {
  private readonly releases: Array<{ name: string; release: () => unknown }> = [];
  private ran: Promise<void> | undefined;

  push(name: string, release: () => unknown): void {
    if (this.ran) throw new Error(`cleanup stack already ran; cannot add '${name}'`);
    this.releases.push({ name, release });
  }

  get size(): number {
    return this.releases.length;
  }

  run(): Promise<void> {
    this.ran ??= (async () => {
      const errors: Error[] = [];
      for (const { name, release } of this.releases.reverse()) {
        try {
          await release();
        } catch (err) {
          errors.push(
            new Error(`release ${name}: ${err instanceof Error ? err.message : String(err)}`, { cause: err }),
          );
        }
      }
      if (errors.length > 0) throw new AggregateError(errors, errors.map((e) => e.message).join("; "));
    })();
    return this.ran;
  }
}
