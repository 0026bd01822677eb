/**
 * Per-team quotas: what one team may hold of a shared node at once, and how fast it may call the
 * API. The operator sets the defaults (env vars, `APIOptions.quotas`); a team's row may override
 * any of them (`teams.limits`, set through the admin routes). Counting limits are checked in the
 * database under a lock on the team's row (db/teams.ts `lockTeam`), so they hold across API
 * processes sharing a database; the request rate is counted per process (rate-limit.ts).
 */
import { z } from "zod";

export interface TeamLimits {
  /** Sandboxes running at once (starting, running, being paused or resumed): creates and resumes past it get 429. */
  maxSandboxes: number;
  /** Paused sandboxes kept at once: pauses past it get 429. */
  maxPausedSandboxes: number;
  /** How long a paused sandbox is kept; older ones are deleted, as E2B does. */
  pausedRetentionSeconds: number;
  /** Snapshots kept at once (each holds a sandbox's memory and disk on its node): 429 past it. */
  maxSnapshots: number;
  /** Template builds running at once: starts past it get 429. */
  maxBuilds: number;
  /** Largest uploaded COPY file (a tar), in bytes: 413 past it. */
  maxUploadBytes: number;
  /** All the team's uploaded COPY files together, in bytes: 413 past it. */
  maxStoredUploadBytes: number;
  /** vCPUs of one sandbox (and of a template, whose build sandboxes and sandboxes get them): 400 past it. */
  maxVcpu: number;
  /** Memory of one sandbox or template, in MiB: 400 past it. */
  maxMemoryMB: number;
  /** Longest sandbox timeout (create, set timeout, connect), in seconds: 400 past it. */
  maxTimeoutSeconds: number;
  /** Requests per second each API key (or access token) of the team may make; 0: no limit. */
  requestsPerSecond: number;
  /** Requests an idle key may make at once before the rate applies. */
  requestBurst: number;
  /** Volumes the team keeps at once: creates past it get 429. */
  maxVolumes: number;
  /** Size of each new volume, in MiB: writes past it fail (ENOSPC inside a sandbox, 507 through the API). */
  volumeSizeMB: number;
}

export type TeamLimitOverrides = Partial<TeamLimits>;

const count = z.number().int().min(0).max(1_000_000);
const positive = z.number().int().min(1);

/** Each limit's bounds, for the operator's settings and the admin routes alike. */
export const TeamLimitsSchema = z.strictObject({
  maxSandboxes: count,
  maxPausedSandboxes: count,
  pausedRetentionSeconds: positive.max(10 * 365 * 86_400),
  maxSnapshots: count,
  maxBuilds: count,
  maxUploadBytes: z.number().int().min(1024).max(Number.MAX_SAFE_INTEGER),
  maxStoredUploadBytes: z.number().int().min(0).max(Number.MAX_SAFE_INTEGER),
  maxVcpu: positive.max(1024),
  maxMemoryMB: positive.max(16 * 1024 * 1024),
  maxTimeoutSeconds: positive.max(10 * 365 * 86_400),
  requestsPerSecond: z.number().min(0).max(1_000_000),
  requestBurst: positive.max(10_000_000),
  maxVolumes: count,
  volumeSizeMB: z
    .number()
    .int()
    .min(16)
    .max(1024 * 1024),
});

/** Overrides as the admin routes take them: any subset; null removes an override. */
export const TeamLimitPatchSchema = z.strictObject(
  Object.fromEntries(
    Object.entries(TeamLimitsSchema.shape).map(([name, schema]) => [name, schema.nullable().optional()]),
  ) as { [K in keyof TeamLimits]: z.ZodOptional<z.ZodNullable<(typeof TeamLimitsSchema.shape)[K]>> },
);
export type TeamLimitPatch = z.infer<typeof TeamLimitPatchSchema>;

/** The defaults: a shared node stays usable by every team (E2B's per-sandbox ceilings). */
export const DEFAULT_TEAM_LIMITS: TeamLimits = {
  maxSandboxes: 20,
  maxPausedSandboxes: 100,
  pausedRetentionSeconds: 30 * 86_400,
  maxSnapshots: 100,
  maxBuilds: 2,
  maxUploadBytes: 2 * 1024 ** 3,
  maxStoredUploadBytes: 10 * 1024 ** 3,
  maxVcpu: 8,
  maxMemoryMB: 8192,
  maxTimeoutSeconds: 86_400,
  requestsPerSecond: 100,
  requestBurst: 200,
  maxVolumes: 10,
  volumeSizeMB: 10 * 1024,
};

/** The environment variable of each default (documented in the README). */
export const TEAM_LIMIT_ENV: Record<keyof TeamLimits, string> = {
  maxSandboxes: "MOAT_TEAM_MAX_SANDBOXES",
  maxPausedSandboxes: "MOAT_TEAM_MAX_PAUSED_SANDBOXES",
  pausedRetentionSeconds: "MOAT_TEAM_PAUSED_RETENTION_SECONDS",
  maxSnapshots: "MOAT_TEAM_MAX_SNAPSHOTS",
  maxBuilds: "MOAT_TEAM_MAX_BUILDS",
  maxUploadBytes: "MOAT_TEAM_MAX_UPLOAD_BYTES",
  maxStoredUploadBytes: "MOAT_TEAM_MAX_STORED_UPLOAD_BYTES",
  maxVcpu: "MOAT_TEAM_MAX_VCPU",
  maxMemoryMB: "MOAT_TEAM_MAX_MEMORY_MB",
  maxTimeoutSeconds: "MOAT_TEAM_MAX_TIMEOUT_SECONDS",
  requestsPerSecond: "MOAT_TEAM_REQUESTS_PER_SECOND",
  requestBurst: "MOAT_TEAM_REQUEST_BURST",
  maxVolumes: "MOAT_TEAM_MAX_VOLUMES",
  volumeSizeMB: "MOAT_TEAM_VOLUME_SIZE_MB",
};

/** A team's limits: the operator's defaults with the team's overrides. */
export function teamLimits(defaults: TeamLimits, team: { limits: TeamLimitOverrides | null }): TeamLimits {
  const overrides = TeamLimitsSchema.partial().safeParse(team.limits ?? {});
  // A row edited by hand into nonsense keeps the defaults rather than failing every request.
  return { ...defaults, ...(overrides.success ? overrides.data : {}) };
}

/** The overrides after a patch: values set, nulls removed. */
export function applyLimitPatch(current: TeamLimitOverrides, patch: TeamLimitPatch): TeamLimitOverrides {
  const next: Record<string, number> = { ...current };
  for (const [name, value] of Object.entries(patch)) {
    if (value === null) delete next[name];
    else if (value !== undefined) next[name] = value;
  }
  return next as TeamLimitOverrides;
}
