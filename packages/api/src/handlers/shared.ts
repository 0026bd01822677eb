import { checkTimeout } from "../quotas/check.js";

/** Either credential authenticates every team route (OpenAPI security requirement). */
export const SECURITY: Array<Record<string, string[]>> = [{ ApiKeyAuth: [] }, { AccessTokenAuth: [] }];

/** A timeout (seconds) must fit the team's maximum sandbox length (maxTimeoutSeconds). */
export { checkTimeout };
