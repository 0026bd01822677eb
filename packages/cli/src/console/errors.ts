/**
 * How a command that failed ends: `moat: <what went wrong>` and what to do, without a stack trace
 * (MOAT_DEBUG=1 shows it; so does the JSON log line of an unexpected error).
 */

/** An error whose message says what to do: printed as it is. */
export class UsageError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "UsageError";
  }
}

/** The line `moat` prints for an error that ended a command. */
export function describeError(err: unknown): string {
  if (!(err instanceof Error)) return String(err);
  const code = (err as NodeJS.ErrnoException).code;
  if (code === "EADDRINUSE")
    return `${err.message}: another program (another moat?) listens there; stop it or choose another port`;
  if (code === "EACCES" && /listen/.test(err.message))
    return `${err.message}: ports below 1024 need root; choose another port`;
  return err.message;
}

/** Ends the process on `err` with its description; the stack only when MOAT_DEBUG asks. */
export function exitWithError(err: unknown): never {
  process.stderr.write(`moat: ${describeError(err)}\n`);
  if (process.env.MOAT_DEBUG && err instanceof Error && err.stack) process.stderr.write(`${err.stack}\n`);
  process.exit(1);
}
