/** How template records look on the wire (E2B's Template, TemplateWithBuilds, TemplateBuild, …). */
import type { z } from "@hono/zod-openapi";
import type { TeamRow, TemplateBuildLogRow, TemplateBuildRow, TemplateRow } from "../db/schema.js";
import type { BuildStatus } from "../template/build-status.js";
import { templateNames } from "../template/names.js";
import type {
  BuildLogEntrySchema,
  TemplateBuildInfoSchema,
  TemplateBuildSchema,
  TemplateSchema,
  TemplateWithBuildsSchema,
} from "./template-schemas.js";

export type TemplateView = z.infer<typeof TemplateSchema>;
export type TemplateBuildView = z.infer<typeof TemplateBuildSchema>;
export type BuildLogEntryView = z.infer<typeof BuildLogEntrySchema>;

/**
 * A template in a list: `buildID` is its latest ready build (its latest build while none is
 * ready), `buildStatus` the status of its latest build.
 */
export function templateView(
  team: Pick<TeamRow, "team_id" | "name">,
  template: TemplateRow,
  latest: TemplateBuildRow | undefined,
  ready: TemplateBuildRow | undefined,
): TemplateView {
  return {
    templateID: template.template_id,
    buildID: ready?.build_id ?? latest?.build_id ?? "",
    cpuCount: template.cpu_count,
    memoryMB: template.memory_mb,
    diskSizeMB: template.disk_size_mb,
    public: template.public,
    ...templateNames(team, template.name),
    createdAt: template.created_at.toISOString(),
    updatedAt: template.updated_at.toISOString(),
    createdBy: null,
    lastSpawnedAt: template.last_spawned_at?.toISOString() ?? null,
    spawnCount: template.spawn_count,
    buildCount: template.build_count,
    envdVersion: ready?.envd_version ?? "",
    buildStatus: latest?.status ?? "waiting",
  };
}

export function templateBuildView(build: TemplateBuildRow): TemplateBuildView {
  return {
    buildID: build.build_id,
    status: build.status,
    createdAt: build.created_at.toISOString(),
    updatedAt: build.updated_at.toISOString(),
    ...(build.finished_at ? { finishedAt: build.finished_at.toISOString() } : {}),
    cpuCount: build.cpu_count,
    memoryMB: build.memory_mb,
    diskSizeMB: build.disk_size_mb,
    ...(build.envd_version ? { envdVersion: build.envd_version } : {}),
  };
}

export function templateWithBuildsView(
  team: Pick<TeamRow, "team_id" | "name">,
  template: TemplateRow,
  builds: TemplateBuildRow[],
): z.infer<typeof TemplateWithBuildsSchema> {
  return {
    templateID: template.template_id,
    public: template.public,
    ...templateNames(team, template.name),
    createdAt: template.created_at.toISOString(),
    updatedAt: template.updated_at.toISOString(),
    lastSpawnedAt: template.last_spawned_at?.toISOString() ?? null,
    spawnCount: template.spawn_count,
    builds: builds.map(templateBuildView),
  };
}

export function buildLogEntryView(entry: TemplateBuildLogRow): BuildLogEntryView {
  return {
    timestamp: entry.timestamp.toISOString(),
    level: entry.level,
    message: entry.message,
    ...(entry.step !== null ? { step: entry.step } : {}),
  };
}

/** A build's status poll; `logs` is always empty (the entries are in `logEntries`). */
export function buildStatusView(status: BuildStatus): z.infer<typeof TemplateBuildInfoSchema> {
  const { template, build, entries, reason } = status;
  return {
    templateID: template.template_id,
    buildID: build.build_id,
    status: build.status,
    logEntries: entries.map(buildLogEntryView),
    logs: [],
    ...(reason
      ? {
          reason: {
            message: reason.message,
            ...(reason.step !== undefined ? { step: reason.step } : {}),
            logEntries: reason.entries.map(buildLogEntryView),
          },
        }
      : {}),
  };
}
