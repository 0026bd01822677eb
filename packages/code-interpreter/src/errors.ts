/** An error a request gets as `{code, message}` with `status` as its HTTP status. */
export class CodeInterpreterError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
    this.name = "CodeInterpreterError";
  }
}
