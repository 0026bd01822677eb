export { createLogger, createNoopLogger, type Logger } from "./logger.js";
export { ENVD_PORT, ENVD_VERSION } from "./version.js";
