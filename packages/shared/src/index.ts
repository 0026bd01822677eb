export { Channel, type ChannelOptions, type Pulled } from "./async/channel.js";
export type { CatalogEntry, SandboxCatalog } from "./catalog.js";
export {
  parseCatalogEntry,
  REDIS_CATALOG_CHANNEL,
  REDIS_SANDBOX_KEY_PREFIX,
  REDIS_TOKENS_KEY,
} from "./catalog.js";
export {
  ALL_TRAFFIC,
  coversAllIPv4,
  domainMatches,
  EgressRuleError,
  type EgressRuleInput,
  MAX_EGRESS_ENTRIES,
  normalizeName,
  type ParsedEgressRules,
  parseEgressRules,
  parseIPv4,
} from "./egress-rules.js";
export { CommandError, type RunOptions, type RunResult, runCommand } from "./exec/run-command.js";
export { useSpawnHelper } from "./exec/spawn-helper.js";
export { type FileOperation, fileSignature } from "./file-signature.js";
export { makeDataDirPrivate, makePrivateDir, makeTreePrivate, writePrivateFile } from "./fs/private-files.js";
export { type ClientErrorAnswer, clientErrorAnswer } from "./http/client-error.js";
export { CleanupStack } from "./lifecycle/cleanup-stack.js";
export {
  beforeLogLine,
  createLogger,
  createNoopLogger,
  LOG_FORMATS,
  type LogFormat,
  type Logger,
  logContext,
  logFormat,
} from "./logger.js";
export {
  MAX_HEARTBEAT_BUILDS,
  type NodeCapacity,
  type NodeHeartbeat,
  type NodeLoad,
} from "./node-heartbeat.js";
export { REQUEST_ID_HEADER, requestIdFrom, traceIdOf } from "./telemetry/ids.js";
export {
  BUILTIN_TEMPLATES,
  type BuiltinTemplate,
  CODE_INTERPRETER_PORT,
  CODE_INTERPRETER_TEMPLATE,
  findBuiltinTemplate,
  START_COMMAND_TAG,
} from "./templates.js";
export { ENVD_PORT, ENVD_VERSION } from "./version.js";
export {
  MAX_VOLUME_MOUNT_PATH_BYTES,
  MAX_VOLUME_MOUNTS,
  volumeMountPathProblem,
  volumeMountsProblem,
} from "./volume-mounts.js";
