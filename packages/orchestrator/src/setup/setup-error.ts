/**
 * A host prerequisite that setup could not satisfy. `message` says what went wrong; `fix` says what
 * the operator should do next, in one line a newcomer can act on.
 */
export class SetupError extends Error {
  constructor(
    message: string,
    readonly fix: string,
    options?: { cause?: unknown },
  ) {
    super(`${message}. ${fix}`, options);
    this.name = "SetupError";
  }
}
