/**
 * The tables as Kysely sees them. The migrations in ./migrations create exactly these; a change to
 * one is a new migration plus a change here.
 */
import type { NodeCapacity, NodeLoad } from "@moat/shared";
import type { ColumnType, Generated, Insertable, JSONColumnType, Selectable } from "kysely";
import type { TeamLimitOverrides } from "../quotas/limits.js";

/** Written by the database on insert, read as a Date, never updated. */
type CreatedAt = ColumnType<Date, Date | undefined, never>;

export interface TeamsTable {
  team_id: string;
  name: string;
  /** The team `bootstrap` made; at most one row has it (a partial unique index). */
  is_default: boolean;
  /** The team's overrides of the operator's default quotas ({}: the defaults). */
  limits: ColumnType<TeamLimitOverrides, string | undefined, string>;
  created_at: CreatedAt;
}

export interface APIKeysTable {
  api_key_id: string;
  team_id: string;
  /** sha256 hex of the whole key; the key itself is shown once and never stored. */
  key_hash: string;
  /** The key's first and last characters ("e2b_1a2b…9f0e"), to tell keys apart in listings. */
  key_mask: string;
  name: string;
  /** Keys derived from an access token (GET /teams) go when the token goes. */
  access_token_id: string | null;
  /** When a request last authenticated with the key (refreshed at most once a minute); null: never. */
  last_used_at: ColumnType<Date | null, Date | null | undefined, Date | null>;
  /** The id of the API key or access token that created it through the API; null: the operator or bootstrap. */
  created_by: ColumnType<string | null, string | null | undefined, never>;
  created_at: CreatedAt;
}

export interface AccessTokensTable {
  access_token_id: string;
  team_id: string;
  /** sha256 hex of the whole token. */
  token_hash: string;
  token_mask: string;
  name: string;
  created_at: CreatedAt;
}

/**
 * starting: placed and being created on its node; running: up (reachable, visible);
 * pausing: the node is pausing it; paused: its files (and memory) are kept on its node, nothing
 * runs; resuming: the node is restoring it; killing: a kill is in flight; killed: gone (kept for
 * logs and history, never shown as a sandbox). `sandbox/states.ts` groups them.
 */
export type SandboxRowState =
  | "starting"
  | "running"
  | "pausing"
  | "paused"
  | "resuming"
  | "killing"
  | "killed";

export interface SandboxNetworkRecord {
  allowPublicTraffic?: boolean;
  maskRequestHost?: string;
  /** Egress rules as the client gave them (sandbox/network.ts); the node enforces them. */
  allowOut?: string[];
  denyOut?: string[];
}

export interface SandboxesTable {
  sandbox_id: string;
  team_id: string;
  template_id: string;
  alias: string | null;
  node_id: string;
  state: SandboxRowState;
  host_address: string | null;
  envd_version: string | null;
  envd_access_token: string | null;
  traffic_access_token: string | null;
  metadata: JSONColumnType<Record<string, string>, string, string>;
  cpu_count: number;
  memory_mb: number;
  disk_size_mb: number;
  /** null when the request did not say (the SDK's `allowInternetAccess` is then undefined). */
  allow_internet_access: boolean | null;
  network: ColumnType<SandboxNetworkRecord | null, string | null, string | null>;
  /** At its end time the node pauses it instead of killing it (`lifecycle.onTimeout: "pause"`). */
  auto_pause: boolean;
  /** Traffic through the client proxy may resume it while paused. */
  auto_resume: boolean;
  /** The lifetime asked for at create (seconds); an auto-resume grants it again. null: older rows. */
  timeout_seconds: number | null;
  /** When it last started: created, or resumed. */
  started_at: Date;
  /** When it was paused (for the paused retention); null unless paused or between states since. */
  paused_at: Date | null;
  end_at: Date;
  stopped_at: Date | null;
  /** Why it stopped: "request", "timeout", "runtime exited", "create failed: …", "missing on node". */
  stop_reason: string | null;
  /** The volumes it mounts; null: none. */
  volume_mounts: ColumnType<SandboxVolumeMount[] | null, string | null | undefined, string | null>;
  /**
   * While paused: the pause its node published to the shared artifact store (any node may resume
   * it from there); null: not published, only its node can resume it.
   */
  artifact_generation: ColumnType<number | null, number | null | undefined, number | null>;
  /** The API process running its create (api_instances), so another can close it if that one dies. */
  api_instance_id: ColumnType<string | null, string | null | undefined, string | null>;
  created_at: CreatedAt;
}

export interface SandboxVolumeMount {
  name: string;
  path: string;
  volumeID: string;
}

/**
 * creating: being made on its node; ready: usable; deleting: being removed (a DELETE retried after
 * a failure finishes it). Only ready volumes are listed, shown and mounted.
 */
export type VolumeState = "creating" | "ready" | "deleting";

/** A team's volume: a file system on one node that sandboxes mount and the content routes read. */
export interface VolumesTable {
  /** 20 characters of [a-z0-9], like sandbox ids. */
  volume_id: string;
  team_id: string;
  /** Unique in the team. */
  name: string;
  /** The node that holds it: sandboxes that mount it start there. */
  node_id: string;
  /** Its moves between nodes through the artifact store so far (volume/move.ts). */
  artifact_generation: Generated<number>;
  /** Its size (the team's volume size when it was made). */
  size_mb: number;
  state: VolumeState;
  created_at: CreatedAt;
}

export interface SandboxLogsTable {
  log_id: Generated<number>;
  sandbox_id: string;
  team_id: string;
  timestamp: Date;
  level: "debug" | "info" | "warn" | "error";
  message: string;
  fields: JSONColumnType<Record<string, string>, string, string>;
}

/** A template a team built; sandboxes start from its builds. */
export interface TemplatesTable {
  /** 20 characters of [a-z0-9], like sandbox ids. */
  template_id: string;
  team_id: string;
  /** Unique in the team; `base` is reserved for the static base template. */
  name: string;
  public: ColumnType<boolean, boolean | undefined, boolean>;
  /** A snapshot of sandboxes (each build one snapshot) rather than a built template. */
  snapshot: ColumnType<boolean, boolean | undefined, never>;
  /**
   * What sandboxes get: the resources of the template's latest ready build (those asked for by
   * its first build until one is ready).
   */
  cpu_count: number;
  memory_mb: number;
  disk_size_mb: Generated<number>;
  build_count: Generated<number>;
  spawn_count: Generated<number>;
  last_spawned_at: Date | null;
  created_at: CreatedAt;
  updated_at: ColumnType<Date, Date | undefined, Date>;
}

/**
 * waiting: requested (POST /v3/templates), not started; building: started, a node runs it;
 * ready: sandboxes can start from it; error: failed, superseded before it started, or interrupted.
 */
export type TemplateBuildStatus = "waiting" | "building" | "ready" | "error";

/**
 * Where a build failed, as E2B names steps: "base", the 1-based index of the step in the start
 * request ("1" is steps[0]), or "finalize".
 */
export interface BuildReason {
  message: string;
  step?: string;
}

/**
 * The start request (TemplateBuildStartV2) as kept with its build; registry passwords are not
 * kept.
 */
export interface StoredBuildStart {
  fromImage?: string;
  fromTemplate?: string;
  /** The build `fromTemplate` resolved to ("base" for the base template). */
  fromBuildID?: string;
  fromImageRegistry?: { type: string; username?: string };
  force: boolean;
  startCmd?: string;
  readyCmd?: string;
  steps: Array<{ type: string; args: string[]; force: boolean; filesHash?: string }>;
}

export interface TemplateBuildsTable {
  build_id: string;
  template_id: string;
  status: TemplateBuildStatus;
  cpu_count: number;
  memory_mb: number;
  disk_size_mb: Generated<number>;
  start_request: ColumnType<StoredBuildStart | null, string | null, string | null>;
  reason: ColumnType<BuildReason | null, string | null, string | null>;
  /** From the node's result: envd's version and the defaults sandboxes of the build get. */
  envd_version: string | null;
  default_user: string | null;
  default_workdir: string | null;
  /** The node that runs (ran) it: its snapshot lives there, so its sandboxes start there. */
  node_id: string | null;
  created_at: CreatedAt;
  updated_at: ColumnType<Date, Date | undefined, Date>;
  started_at: Date | null;
  finished_at: Date | null;
  /**
   * Refreshed by the API process running the build; a build in waiting/building whose heartbeat
   * stopped belongs to a process that is gone (marked error, "interrupted").
   */
  heartbeat_at: Date | null;
  /**
   * When the node was told to drop it: a newer build of the template was ready and no tag named
   * it any more (it can never be resolved again). null while it is kept.
   */
  retired_at: Date | null;
  /** A snapshot's build: the sandbox it was taken from. */
  source_sandbox_id: ColumnType<string | null, string | null | undefined, never>;
}

export interface TemplateBuildLogsTable {
  build_id: string;
  /** 0, 1, 2, … in the order the node sent them (logsOffset counts these). */
  ordinal: number;
  timestamp: Date;
  level: "debug" | "info" | "warn" | "error";
  message: string;
  /** As in BuildReason; null for the build as a whole. */
  step: string | null;
}

export interface TemplateTagsTable {
  template_id: string;
  tag: string;
  build_id: string;
  created_at: ColumnType<Date, Date | undefined, Date>;
}

/** A tar the SDK uploaded for COPY steps, by the hash it computed over the files. */
export interface TemplateFilesTable {
  team_id: string;
  hash: string;
  /** bigint: the drivers read it as a string (or number); use Number(). */
  size: ColumnType<string | number | bigint, number, number>;
  /** Relative to the data directory. */
  path: string;
  /**
   * SHA-256 (hex) of the tar as the API received it: builds are cached by it and nodes check their
   * download against it. null for uploads older than it (they read as not uploaded).
   */
  content_sha256: string | null;
  created_at: ColumnType<Date, Date | undefined, Date>;
  /** When a build last asked for it (the SDK's check before an upload, a build's start). */
  last_used_at: Date | null;
}

/** Keys shared by every API process on the database (e.g. the one signing template file URLs). */
export interface SigningKeysTable {
  name: string;
  /** Hex. */
  key: string;
  created_at: CreatedAt;
}

/** ready: takes new sandboxes; draining: keeps its sandboxes, takes no new ones; unhealthy: missed heartbeats. */
export type NodeStatus = "ready" | "draining" | "unhealthy";

export type { NodeCapacity, NodeLoad };

/** A node that registered by heartbeat (PUT /internal/nodes/{nodeID}). */
export interface NodesTable {
  id: string;
  rpc_url: string;
  proxy_url: string;
  version: string;
  runtime: string;
  labels: ColumnType<string[], string, string>;
  capacity: ColumnType<NodeCapacity, string, string>;
  load: ColumnType<NodeLoad, string, string>;
  /** Template build ids the node holds locally. */
  builds: ColumnType<string[], string, string>;
  status: NodeStatus;
  last_heartbeat: Date;
  first_seen: CreatedAt;
}

/** One API process, alive while its heartbeat is recent. */
export interface APIInstancesTable {
  id: string;
  started_at: CreatedAt;
  heartbeat_at: ColumnType<Date, Date | undefined, Date>;
}

export interface Database {
  nodes: NodesTable;
  api_instances: APIInstancesTable;
  teams: TeamsTable;
  api_keys: APIKeysTable;
  access_tokens: AccessTokensTable;
  sandboxes: SandboxesTable;
  sandbox_logs: SandboxLogsTable;
  templates: TemplatesTable;
  template_builds: TemplateBuildsTable;
  template_build_logs: TemplateBuildLogsTable;
  template_tags: TemplateTagsTable;
  template_files: TemplateFilesTable;
  signing_keys: SigningKeysTable;
  volumes: VolumesTable;
}

export type TeamRow = Selectable<TeamsTable>;
export type APIKeyRow = Selectable<APIKeysTable>;
export type SandboxRow = Selectable<SandboxesTable>;
export type NewSandboxRow = Insertable<SandboxesTable>;
export type SandboxLogRow = Selectable<SandboxLogsTable>;
export type TemplateRow = Selectable<TemplatesTable>;
export type TemplateBuildRow = Selectable<TemplateBuildsTable>;
export type TemplateBuildLogRow = Selectable<TemplateBuildLogsTable>;
export type VolumeRow = Selectable<VolumesTable>;
