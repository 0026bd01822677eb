/**
 * What every operation works with: configuration, the database, the nodes, the routing cache and
 * the template builds and files. Built once by `openAPI`; handlers and the sandbox and template
 * code receive it, never globals.
 */
import type { Logger } from "@moat/shared";
import type { APIConfig } from "./config.js";
import type { DB } from "./db/database.js";
import type { NodeClient } from "./orchestrator/node-client.js";
import type { PlacementStrategy } from "./placement/placement.js";
import type { APICatalog } from "./sandbox/catalog.js";
import type { CreatesInFlight } from "./sandbox/creates-in-flight.js";
import type { SandboxLocks } from "./sandbox/locks.js";
import type { SandboxTransitions } from "./sandbox/transitions.js";
import type { TemplateBuilds } from "./template/build-runner.js";
import type { TemplateFileStore } from "./template/file-store.js";
import type { FileURLSigner } from "./template/file-urls.js";
import type { VolumeTokens } from "./volume/tokens.js";

export interface APIContext {
  readonly config: APIConfig;
  /** This API process's id (api_instances): recorded with the creates it runs. */
  readonly instanceID: string;
  readonly db: DB;
  readonly nodes: ReadonlyMap<string, NodeClient>;
  readonly placement: PlacementStrategy;
  readonly catalog: APICatalog;
  readonly logger: Logger;
  /**
   * Serialises end-time and network changes per sandbox: in this process (KeyedLock), and across
   * API processes on PostgreSQL (advisory locks, locks.ts).
   */
  readonly locks: SandboxLocks;
  /** The pauses and resumes in flight in this process, one per sandbox. */
  readonly transitions: SandboxTransitions;
  /** The creates in flight in this process, and the node each is asking now. */
  readonly creates: CreatesInFlight;
  /** The template builds this process runs. */
  readonly builds: TemplateBuilds;
  /** The files uploaded for COPY steps, and the signed URLs they are uploaded and downloaded at. */
  readonly templateFiles: TemplateFileStore;
  readonly fileURLs: FileURLSigner;
  /** The tokens of volumes, which the volume content routes take. */
  readonly volumeTokens: VolumeTokens;
}
