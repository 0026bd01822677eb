export type { CatalogEntry, SandboxCatalog } from "./catalog.js";
export { CommandError, type RunOptions, type RunResult, runCommand } from "./exec/run-command.js";
export { CleanupStack } from "./lifecycle/cleanup-stack.js";
export { createLogger, createNoopLogger, type Logger } from "./logger.js";
export { ENVD_PORT, ENVD_VERSION } from "./version.js";
