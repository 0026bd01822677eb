/**
 * The wire schemas of the public API: one zod definition per E2B OpenAPI schema (names as in the
 * SDK's own copy of E2B's spec). The same objects validate requests and produce /openapi.json.
 * Request bodies are strict: a key the schema does not name is an error, not silently dropped.
 */
import { z } from "@hono/zod-openapi";

const INT32_MAX = 2_147_483_647;

export const ErrorSchema = z
  .object({
    code: z.number().int().openapi({ description: "Same as the HTTP status" }),
    message: z.string(),
  })
  .openapi("Error");

const StringMap = z.record(z.string(), z.string());
export const EnvVarsSchema = StringMap.openapi("EnvVars");
export const MetadataSchema = StringMap.openapi("SandboxMetadata");

const TimeoutSeconds = z
  .number()
  .int()
  .min(1)
  .max(INT32_MAX)
  .openapi({ description: "Seconds", format: "int32" });
const NonNegativeSeconds = z.number().int().min(0).max(INT32_MAX).openapi({ format: "int32" });

export const NetworkConfigSchema = z
  .strictObject({
    allowOut: z.array(z.string()).optional(),
    denyOut: z.array(z.string()).optional(),
    allowPublicTraffic: z
      .boolean()
      .optional()
      .openapi({ description: "false: non-envd ports need the e2b-traffic-access-token header" }),
    maskRequestHost: z.string().optional(),
    egressProxy: z
      .strictObject({
        address: z.string(),
        username: z.string().optional(),
        password: z.string().optional(),
      })
      .nullable()
      .optional(),
    rules: z
      .record(
        z.string(),
        z.array(z.strictObject({ transform: z.strictObject({ headers: StringMap.optional() }).optional() })),
      )
      .optional(),
    httpsPorts: z.array(z.number().int()).optional(),
  })
  .openapi("SandboxNetworkConfig");

export const NetworkUpdateSchema = z
  .strictObject({
    allowOut: z.array(z.string()).optional(),
    denyOut: z.array(z.string()).optional(),
    allow_internet_access: z.boolean().optional(),
    egressProxy: NetworkConfigSchema.shape.egressProxy,
    rules: NetworkConfigSchema.shape.rules,
  })
  .openapi("SandboxNetworkUpdateConfig", {
    description: "Replaces the sandbox's egress rules; a field left out is cleared.",
  });

const newSandboxFields = {
  templateID: z.string().min(1).max(256).openapi({ description: "Template id or alias, e.g. base" }),
  timeout: TimeoutSeconds.optional(),
  metadata: MetadataSchema.optional(),
  envVars: EnvVarsSchema.optional(),
  mcp: z.record(z.string(), z.unknown()).nullable().optional(),
  autoPause: z.boolean().optional(),
  autoPauseMemory: z.boolean().optional(),
  autoResume: z.strictObject({ enabled: z.boolean() }).optional(),
  allow_internet_access: z.boolean().optional(),
  network: NetworkConfigSchema.optional(),
  iam: z
    .strictObject({
      tokens: z
        .record(z.string(), z.strictObject({ audience: z.string(), tokenType: z.string() }))
        .optional(),
    })
    .optional(),
  volumeMounts: z.array(z.strictObject({ name: z.string(), path: z.string() })).optional(),
};

export const NewSandboxV2Schema = z
  .strictObject(newSandboxFields)
  .openapi("NewSandboxV2", { description: "Create (SDK ≥2.51). Always secured; timeout defaults to 300 s." });

export const NewSandboxSchema = z
  .strictObject({ ...newSandboxFields, secure: z.boolean().optional() })
  .openapi("NewSandbox", { description: "Create (SDK ≤2.50, CLI). Timeout defaults to 15 s." });

export const SandboxSchema = z
  .object({
    templateID: z.string(),
    sandboxID: z.string(),
    alias: z.string().optional(),
    clientID: z.string(),
    envdVersion: z.string(),
    envdAccessToken: z.string().optional(),
    trafficAccessToken: z.string().nullable().optional(),
    domain: z.string().nullable().optional(),
  })
  .openapi("Sandbox");

const SandboxStateSchema = z.enum(["running", "paused"]).openapi("SandboxState");

const listedSandboxFields = {
  templateID: z.string(),
  sandboxID: z.string(),
  alias: z.string().optional(),
  clientID: z.string(),
  startedAt: z.string().openapi({ format: "date-time" }),
  endAt: z.string().openapi({ format: "date-time" }),
  cpuCount: z.number().int(),
  memoryMB: z.number().int(),
  diskSizeMB: z.number().int(),
  metadata: MetadataSchema.optional(),
  state: SandboxStateSchema,
  envdVersion: z.string(),
  volumeMounts: z.array(z.object({ name: z.string(), path: z.string() })).optional(),
};

export const ListedSandboxSchema = z.object(listedSandboxFields).openapi("ListedSandbox");

export const SandboxDetailSchema = z
  .object({
    ...listedSandboxFields,
    envdAccessToken: z.string().optional(),
    domain: z.string().nullable().optional(),
    allowInternetAccess: z.boolean().nullable().optional(),
    network: z
      .object({
        allowPublicTraffic: z.boolean().optional(),
        maskRequestHost: z.string().optional(),
        allowOut: z.array(z.string()).optional(),
        denyOut: z.array(z.string()).optional(),
      })
      .optional(),
    lifecycle: z.object({ onTimeout: z.enum(["kill", "pause"]), autoResume: z.boolean() }).optional(),
  })
  .openapi("SandboxDetail");

export const ConnectSandboxSchema = z
  .strictObject({ timeout: NonNegativeSeconds, memory: z.boolean().optional() })
  .openapi("ConnectSandbox");

export const ConnectSandboxV2Schema = z
  .strictObject({ timeout: NonNegativeSeconds.optional(), memory: z.boolean().optional() })
  .openapi("ConnectSandboxV2", {
    description: "An omitted timeout means 300 s; the end time only moves later.",
  });

export const SandboxTimeoutRequestSchema = z
  .strictObject({ timeout: NonNegativeSeconds.openapi({ description: "New end time = now + timeout" }) })
  .openapi("SandboxTimeoutRequest");

export const SandboxRefreshRequestSchema = z
  .strictObject({ duration: NonNegativeSeconds.optional() })
  .openapi("SandboxRefreshRequest");

export const SandboxPauseRequestSchema = z
  .strictObject({ memory: z.boolean().optional() })
  .openapi("SandboxPauseRequest");

export const ResumedSandboxSchema = z
  .strictObject({
    timeout: NonNegativeSeconds.optional(),
    autoPause: z.boolean().optional(),
    memory: z.boolean().optional(),
  })
  .openapi("ResumedSandbox");

export const SandboxLogEntrySchema = z
  .object({
    timestamp: z.string().openapi({ format: "date-time" }),
    level: z.enum(["debug", "info", "warn", "error"]),
    message: z.string(),
    fields: StringMap,
  })
  .openapi("SandboxLogEntry");

export const SandboxLogsSchema = z
  .object({
    logs: z.array(z.object({ timestamp: z.string(), line: z.string() })),
    logEntries: z.array(SandboxLogEntrySchema),
  })
  .openapi("SandboxLogs");

export const SandboxLogsV2Schema = z
  .object({ logs: z.array(SandboxLogEntrySchema) })
  .openapi("SandboxLogsV2Response");

export const SandboxMetricSchema = z
  .object({
    timestamp: z.string().openapi({ format: "date-time" }),
    timestampUnix: z.number().int(),
    cpuCount: z.number().int(),
    cpuUsedPct: z.number(),
    memUsed: z.number().int(),
    memTotal: z.number().int(),
    memCache: z.number().int(),
    diskUsed: z.number().int(),
    diskTotal: z.number().int(),
  })
  .openapi("SandboxMetric");

export const SandboxesWithMetricsSchema = z
  .object({ sandboxes: z.record(z.string(), SandboxMetricSchema) })
  .openapi("SandboxesWithMetrics");

export const TeamSchema = z
  .object({ teamID: z.string(), name: z.string(), apiKey: z.string(), isDefault: z.boolean() })
  .openapi("Team");

export const CatalogEntrySchema = z
  .object({
    sandboxID: z.string(),
    state: z.enum(["running", "paused", "pausing", "starting", "stopping"]),
    hostAddress: z.string(),
    envdAccessToken: z.string().optional(),
    trafficAccessToken: z.string().optional(),
    autoResume: z.boolean(),
    nodeID: z.string().optional(),
    nodeProxyURL: z.string().optional(),
  })
  .openapi("CatalogEntry");

export const SandboxIDParamsSchema = z.object({
  sandboxID: z
    .string()
    .openapi({ param: { name: "sandboxID", in: "path" }, example: "i1a2b3c4d5e6f7g8h9j0" }),
});

export function errorJSON(description: string) {
  return { description, content: { "application/json": { schema: ErrorSchema } } };
}

/** Responses every authenticated route can give. */
export const errorResponses = {
  400: errorJSON("Invalid request"),
  401: errorJSON("Missing or invalid API key"),
  500: errorJSON("Internal error"),
};

export const notFoundResponse = { 404: errorJSON("No such sandbox for this team") };
export const conflictResponse = { 409: errorJSON("The sandbox is between states; retry") };
export const busyResponse = {
  429: errorJSON("The sandbox's node cannot take it now; retry after Retry-After seconds"),
};

export function jsonBody<T extends z.ZodType>(schema: T, required = true) {
  return { required, content: { "application/json": { schema } } };
}

export function jsonResponse<T extends z.ZodType>(schema: T, description: string) {
  return { description, content: { "application/json": { schema } } };
}
