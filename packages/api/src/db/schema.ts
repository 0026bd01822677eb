/**
 * The tables as Kysely sees them. The migrations in ./migrations create exactly these; a change to
 * one is a new migration plus a change here.
 */
import type { ColumnType, Generated, Insertable, JSONColumnType, Selectable } from "kysely";

/** Written by the database on insert, read as a Date, never updated. */
type CreatedAt = ColumnType<Date, Date | undefined, never>;

export interface TeamsTable {
  team_id: string;
  name: string;
  /** The team `bootstrap` made; at most one row has it (a partial unique index). */
  is_default: boolean;
  /** Longest timeout a sandbox of the team may ask for (create, set timeout, connect). */
  max_timeout_seconds: number;
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
  end_at: Date;
  stopped_at: Date | null;
  /** Why it stopped: "request", "timeout", "runtime exited", "create failed: …", "missing on node". */
  stop_reason: string | null;
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

export interface Database {
  teams: TeamsTable;
  api_keys: APIKeysTable;
  access_tokens: AccessTokensTable;
  sandboxes: SandboxesTable;
  sandbox_logs: SandboxLogsTable;
}

export type TeamRow = Selectable<TeamsTable>;
export type SandboxRow = Selectable<SandboxesTable>;
export type NewSandboxRow = Insertable<SandboxesTable>;
export type SandboxLogRow = Selectable<SandboxLogsTable>;
