/**
 * @moat/api: the E2B-compatible REST control plane. `moat up` starts it in-process with
 * `startAPI`; tests build it with `openAPI` and call `app.request()`.
 */
export { type API, type OpenAPIOptions, openAPI, type RunningAPI, startAPI } from "./api.js";
export type { BootstrapResult } from "./auth/teams.js";
export { type APIConfig, type APIOptions, ConfigError, type OrchestratorNodeOptions } from "./config.js";
export { MigrationError } from "./db/database.js";
export {
  DEFAULT_TEAM_LIMITS,
  TEAM_LIMIT_ENV,
  type TeamLimitOverrides,
  type TeamLimits,
} from "./quotas/limits.js";
export { APICatalog } from "./sandbox/catalog.js";
