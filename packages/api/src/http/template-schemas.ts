/**
 * The wire schemas of the template routes, named as in the SDK's own copy of E2B's spec. Request
 * bodies are strict, except template steps: the SDK adds keys of its own to them (forceUpload,
 * resolveSymlinks, gzip), which are dropped.
 */
import { z } from "@hono/zod-openapi";
import { STEP_TYPES } from "../template/start-build.js";

const INT32_MAX = 2_147_483_647;
const DateTime = z.string().openapi({ format: "date-time" });

export const MIN_TEMPLATE_CPU = 1;
export const MAX_TEMPLATE_CPU = 32;
export const MIN_TEMPLATE_MEMORY_MB = 128;
export const MAX_TEMPLATE_MEMORY_MB = 131_072;

export const TemplateBuildRequestV3Schema = z
  .strictObject({
    name: z
      .string()
      .max(300)
      .optional()
      .openapi({ description: '"name" or "name:tag"', example: "my-template:v1" }),
    tags: z.array(z.string().max(128)).max(32).optional(),
    cpuCount: z
      .number()
      .int()
      .min(MIN_TEMPLATE_CPU)
      .max(MAX_TEMPLATE_CPU)
      .optional()
      .openapi({ description: "vCPUs of the template's sandboxes; default 2", format: "int32" }),
    memoryMB: z
      .number()
      .int()
      .min(MIN_TEMPLATE_MEMORY_MB)
      .max(MAX_TEMPLATE_MEMORY_MB)
      .refine((mb) => mb % 2 === 0, { message: "memoryMB must be an even number" })
      .optional()
      .openapi({ description: "Memory of the template's sandboxes (MiB); default 1024", format: "int32" }),
    minFreeDiskMb: z
      .number()
      .int()
      .min(0)
      .max(INT32_MAX)
      .optional()
      .openapi({ description: "Accepted; sandbox disks are not size-limited in this version" }),
    alias: z.string().max(300).optional().openapi({ description: "Deprecated: use name" }),
    teamID: z.string().optional().openapi({ description: "Deprecated: the API key's team" }),
  })
  .openapi("TemplateBuildRequestV3");

export const TemplateRequestResponseV3Schema = z
  .object({
    templateID: z.string(),
    buildID: z.string(),
    public: z.boolean(),
    names: z.array(z.string()),
    tags: z.array(z.string()),
    aliases: z.array(z.string()),
  })
  .openapi("TemplateRequestResponseV3");

export const TemplateBuildFileUploadSchema = z
  .object({
    present: z.boolean(),
    url: z.string().optional().openapi({ description: "Signed; PUT the tar there (no API key)" }),
    headers: z.record(z.string(), z.string()).optional(),
  })
  .openapi("TemplateBuildFileUpload");

export const TemplateStepSchema = z
  .object({
    type: z.enum(STEP_TYPES),
    args: z.array(z.string()).default([]),
    force: z.boolean().optional(),
    filesHash: z.string().optional(),
  })
  .openapi("TemplateStep", { description: "Other keys the SDK sends are ignored" });

export const FromImageRegistrySchema = z
  .discriminatedUnion("type", [
    z.strictObject({ type: z.literal("registry"), username: z.string(), password: z.string() }),
    z.strictObject({
      type: z.literal("aws"),
      awsAccessKeyId: z.string(),
      awsSecretAccessKey: z.string(),
      awsRegion: z.string(),
    }),
    z.strictObject({ type: z.literal("gcp"), serviceAccountJson: z.string() }),
  ])
  .openapi("FromImageRegistry", { description: "Only type registry is supported in this version" });

export const TemplateBuildStartV2Schema = z
  .strictObject({
    fromImage: z.string().nullish(),
    fromTemplate: z.string().nullish(),
    fromImageRegistry: FromImageRegistrySchema.nullish(),
    force: z.boolean().optional(),
    startCmd: z.string().nullish(),
    readyCmd: z.string().nullish(),
    steps: z.array(TemplateStepSchema).max(1000).optional(),
  })
  .openapi("TemplateBuildStartV2", {
    description: "Exactly one of fromImage and fromTemplate must be given and non-empty",
  });

export const TemplateBuildStatusSchema = z
  .enum(["building", "waiting", "ready", "error"])
  .openapi("TemplateBuildStatus");

export const LogLevelSchema = z.enum(["debug", "info", "warn", "error"]).openapi("LogLevel");

/** Query parameters the build log routes share: a page size and the lowest level answered. */
export const LogPageQuerySchema = z.object({
  limit: z.coerce.number().int().min(0).max(100).optional().openapi({ description: "0-100, default 100" }),
  level: LogLevelSchema.optional().openapi({ description: "The lowest level answered" }),
});

export const BuildLogEntrySchema = z
  .object({
    timestamp: DateTime,
    level: LogLevelSchema,
    message: z.string(),
    step: z
      .string()
      .optional()
      .openapi({ description: '"base", the step number (1 is the first) or "finalize"' }),
  })
  .openapi("BuildLogEntry");

export const TemplateBuildLogsResponseSchema = z
  .object({
    logs: z.array(
      BuildLogEntrySchema.extend({
        id: z.string().openapi({ description: "Stable identifier of the entry within its build" }),
      }),
    ),
    nextCursor: z.string().optional().openapi({ description: "pageCursor of the next page, if any" }),
    source: z.enum(["temporary", "persistent"]).openapi("LogsSource"),
  })
  .openapi("TemplateBuildLogsResponse");

export const TemplateBuildInfoSchema = z
  .object({
    templateID: z.string(),
    buildID: z.string(),
    status: TemplateBuildStatusSchema,
    logEntries: z.array(BuildLogEntrySchema),
    logs: z.array(z.string()).openapi({ description: "Always empty; use logEntries" }),
    reason: z
      .object({
        message: z.string(),
        step: z.string().optional(),
        logEntries: z.array(BuildLogEntrySchema).optional(),
      })
      .optional()
      .openapi("BuildStatusReason"),
  })
  .openapi("TemplateBuildInfo");

export const TemplateAliasResponseSchema = z
  .object({ templateID: z.string(), public: z.boolean() })
  .openapi("TemplateAliasResponse");

export const TemplateSchema = z
  .object({
    templateID: z.string(),
    buildID: z.string().openapi({ description: "The latest ready build (the latest build when none is)" }),
    cpuCount: z.number().int(),
    memoryMB: z.number().int(),
    diskSizeMB: z.number().int(),
    public: z.boolean(),
    aliases: z.array(z.string()),
    names: z.array(z.string()),
    createdAt: DateTime,
    updatedAt: DateTime,
    createdBy: z.object({ id: z.string(), email: z.string() }).nullable(),
    lastSpawnedAt: DateTime.nullable(),
    spawnCount: z.number().int(),
    buildCount: z.number().int(),
    envdVersion: z.string(),
    buildStatus: TemplateBuildStatusSchema.openapi({ description: "Of the latest build" }),
  })
  .openapi("Template");

export const TemplateBuildSchema = z
  .object({
    buildID: z.string(),
    status: TemplateBuildStatusSchema,
    createdAt: DateTime,
    updatedAt: DateTime,
    finishedAt: DateTime.optional(),
    cpuCount: z.number().int(),
    memoryMB: z.number().int(),
    diskSizeMB: z.number().int().optional(),
    envdVersion: z.string().optional(),
  })
  .openapi("TemplateBuild");

export const TemplateWithBuildsSchema = z
  .object({
    templateID: z.string(),
    public: z.boolean(),
    aliases: z.array(z.string()),
    names: z.array(z.string()),
    createdAt: DateTime,
    updatedAt: DateTime,
    lastSpawnedAt: DateTime.nullable(),
    spawnCount: z.number().int(),
    builds: z.array(TemplateBuildSchema),
  })
  .openapi("TemplateWithBuilds");

export const TemplateUpdateRequestSchema = z
  .strictObject({ public: z.boolean().optional() })
  .openapi("TemplateUpdateRequest");

export const TemplateUpdateResponseSchema = z
  .object({ names: z.array(z.string()) })
  .openapi("TemplateUpdateResponse");

export const AssignTemplateTagsRequestSchema = z
  .strictObject({
    target: z
      .string()
      .min(1)
      .max(300)
      .openapi({ description: '"name:tag" (no tag: the latest ready build)' }),
    tags: z.array(z.string().max(128)).min(1, "at least one tag is required").max(32),
  })
  .openapi("AssignTemplateTagsRequest");

export const AssignedTemplateTagsSchema = z
  .object({ buildID: z.string(), tags: z.array(z.string()) })
  .openapi("AssignedTemplateTags");

export const DeleteTemplateTagsRequestSchema = z
  .strictObject({
    name: z.string().min(1).max(300),
    tags: z.array(z.string().max(128)).min(1, "at least one tag is required").max(32),
  })
  .openapi("DeleteTemplateTagsRequest");

export const TemplateTagSchema = z
  .object({ tag: z.string(), buildID: z.string(), createdAt: DateTime })
  .openapi("TemplateTag");

export const TemplateIDParamsSchema = z.object({
  templateID: z
    .string()
    .min(1)
    .max(300)
    .openapi({ param: { name: "templateID", in: "path" }, description: "Template id or name" }),
});

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

export const BuildIDParamsSchema = TemplateIDParamsSchema.extend({
  buildID: z
    .string()
    .regex(UUID, "buildID must be a lowercase UUID")
    .openapi({ param: { name: "buildID", in: "path" } }),
});

/** One page: `limit` 1-100 (default 100), `nextToken` from the previous page's X-Next-Token. */
export const PageQuerySchema = z.object({
  limit: z.coerce.number().int().min(1).max(100).optional().openapi({ description: "1-100, default 100" }),
  nextToken: z.string().optional(),
});

export const nextTokenHeaders = z.object({
  "X-Next-Token": z.string().optional().openapi({ description: "Absent on the last page" }),
});
