export { ArtifactChecksumError } from "./artifacts/checksum.js";
export { DirectoryArtifactStore } from "./artifacts/directory.js";
export { describeArtifactStore, openArtifactStore, parseArtifactLocation } from "./artifacts/open.js";
export { S3ArtifactStore } from "./artifacts/s3.js";
export type { ArtifactStore } from "./artifacts/store.js";
export {
  checkMetricsInterval,
  checkNodeID,
  checkNodeToken,
  checkRetentionHours,
  DEFAULT_DATA_DIR,
  DEFAULT_NODE_ID,
  defaultDataDir,
  type NodeConfig,
  readNodeConfig,
} from "./config.js";
export { acquireHostLock, HOST_LOCK_PATH, HostLockedError, hostLockPath } from "./host/lock.js";
export {
  DENIED_EGRESS_CIDRS,
  type EgressAllowEntry,
  EgressAllowError,
  isDeniedEgress,
  parseEgressAllow,
} from "./network/egress.js";
export { listLinks, listNamespaces } from "./network/netns.js";
export { createSandboxNetwork, destroySandboxNetwork, SANDBOX_MTU } from "./network/sandbox-network.js";
export { checkNamePrefix, NAME_PREFIX, Slot } from "./network/slot.js";
export {
  advertisedAddress,
  Heartbeat,
  type HeartbeatBody,
  type HeartbeatOptions,
  httpURL,
} from "./node/heartbeat.js";
export { cpuPercent, LoadSampler, parseMeminfo, parseProcStat } from "./node/load.js";
export {
  APP_DIR,
  ENVD_DIR,
  type Orchestrator,
  type OrchestratorOptions,
  startOrchestrator,
} from "./orchestrator.js";
export { ENVD_ENV, ENVD_NODE_FLAGS, sandboxSpec } from "./runtime/oci-spec.js";
export { Runsc } from "./runtime/runsc.js";
export { warmEnvd } from "./sandbox/envd-client.js";
export type { CreateInput, SandboxEvent, SandboxManager } from "./sandbox/manager.js";
export { pausedKeys } from "./sandbox/relocation.js";
export { NODE_TOKEN_FILE, nodeTokenPath } from "./server/node-token.js";
export { type DebianMirror, findDebianMirror } from "./setup/apt-sources.js";
export { BASE_DEFINITION, definitionHash } from "./setup/base-definition.js";
export {
  type BaseTemplate,
  baseTemplateDir,
  ensureBaseTemplate,
  findBaseTemplate,
  type TemplateProgress,
} from "./setup/base-template.js";
export { readSetupConfig, type SetupConfig } from "./setup/config.js";
export { type DoctorCheck, runDoctor } from "./setup/doctor.js";
export { findIdleMonitorSleeps } from "./setup/idle-patch.js";
export {
  ensureRunsc,
  RUNSC_PLATFORM,
  type RunscInstall,
  readRunscInstall,
  runtimeDir,
} from "./setup/runsc-install.js";
export { SetupError } from "./setup/setup-error.js";
export { loopDevicesUnder, mountDisk, unmountDisk } from "./storage/disk.js";
export { mountRootfs, mountsUnder, removeSandboxDir } from "./storage/overlay.js";
export {
  BUILTIN_TEAM,
  type BuiltinTemplateResult,
  CODE_INTERPRETER_DEFINITION,
  CODE_INTERPRETER_PACKAGES,
  codeInterpreterBuildID,
} from "./template/code-interpreter.js";
export {
  applyLayers,
  DEFAULT_IMAGE_MAX_BYTES,
  type ImageConfig,
  LayerError,
  layerSandboxArgs,
  MEDIA_TYPES,
  type PulledImage,
  parseImageReference,
  RegistryAllowList,
  RegistryClient,
  RegistryError,
} from "./template/oci/index.js";
export { type TemplateBuild, TemplateStore } from "./template/store.js";
