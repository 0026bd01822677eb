import { resolvePath } from "../auth/paths.js";
import type { User } from "../auth/users.js";
import { HTTPError } from "./errors.js";

/** Resolves a path from a REST request (`~`, relative to the workdir or home); invalid ones are 400. */
export function restPath(input: string, user: User, defaultWorkdir: string | undefined): string {
  try {
    return resolvePath(input, user, defaultWorkdir);
  } catch (err) {
    throw new HTTPError(400, `invalid path '${input}': ${err instanceof Error ? err.message : String(err)}`);
  }
}
