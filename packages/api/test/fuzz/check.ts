/**
 * What every fuzzed answer must satisfy, whatever the transport: no 5xx beyond the documented
 * ones, and error bodies in the API's shape.
 */

export interface Answer {
  status: number;
  headers: Headers;
  text: string;
}

/**
 * Problems with an API answer (empty when it is fine): a 5xx the operation does not document
 * (500 never is), or an error whose body is not exactly `{code, message}` with `code` = status.
 */
export function apiAnswerProblems(
  answer: Answer,
  method: string,
  documented5xx: ReadonlySet<number> = new Set(),
) {
  const problems: string[] = [];
  const { status } = answer;
  if (status >= 500 && (status === 500 || !documented5xx.has(status)))
    problems.push(`server error ${status}`);
  if (status >= 400 && method !== "HEAD")
    problems.push(...errorBodyProblems(answer, (body) => body.code === status, ["requestId"]));
  return problems;
}

/**
 * Problems with an error body: JSON, `message` a non-empty string, `codeOK(body)` holds, and no
 * other keys unless `extraKeys` names them.
 */
export function errorBodyProblems(
  answer: Answer,
  codeOK: (body: Record<string, unknown>) => boolean,
  extraKeys: readonly string[] = [],
): string[] {
  const type = answer.headers.get("content-type") ?? "";
  if (!/^application\/json\b/i.test(type)) return [`error ${answer.status} with content type '${type}'`];
  let body: unknown;
  try {
    body = JSON.parse(answer.text);
  } catch {
    return [`error ${answer.status} with a body that is not JSON: ${answer.text.slice(0, 200)}`];
  }
  if (!body || typeof body !== "object" || Array.isArray(body)) {
    return [`error ${answer.status} with a body that is not an object: ${answer.text.slice(0, 200)}`];
  }
  const fields = body as Record<string, unknown>;
  const problems: string[] = [];
  if (typeof fields.message !== "string" || fields.message === "") problems.push("error without a message");
  if (!codeOK(fields)) problems.push(`error ${answer.status} with code ${JSON.stringify(fields.code)}`);
  const extra = Object.keys(fields).filter((k) => k !== "code" && k !== "message" && !extraKeys.includes(k));
  if (extra.length) problems.push(`error body with extra keys ${extra.join(", ")}`);
  return problems;
}

/** The code names of the Connect protocol, as its error bodies carry them. */
export const CONNECT_CODES = new Set([
  "canceled",
  "unknown",
  "invalid_argument",
  "deadline_exceeded",
  "not_found",
  "already_exists",
  "permission_denied",
  "resource_exhausted",
  "failed_precondition",
  "aborted",
  "out_of_range",
  "unimplemented",
  "internal",
  "unavailable",
  "data_loss",
  "unauthenticated",
]);
