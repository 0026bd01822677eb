import type { TeamRow } from "../db/schema.js";
import { InvalidRequestError } from "../errors.js";

/** Either credential authenticates every team route (OpenAPI security requirement). */
export const SECURITY: Array<Record<string, string[]>> = [{ ApiKeyAuth: [] }, { AccessTokenAuth: [] }];

/** A timeout (seconds) must fit the team's maximum sandbox length. */
export function checkTimeout(seconds: number, team: TeamRow, field: string): void {
  const max = team.max_timeout_seconds;
  if (seconds > max) {
    throw new InvalidRequestError(
      `${field} must be at most ${max} seconds (${Math.round((max / 3600) * 100) / 100} h), got ${seconds}`,
    );
  }
}
