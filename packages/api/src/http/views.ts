/** How records look on the wire (E2B's Sandbox, ListedSandbox and SandboxDetail). */
import type { z } from "@hono/zod-openapi";
import type { SandboxRow } from "../db/schema.js";
import { publicState } from "../sandbox/states.js";
import type { ListedSandboxSchema, SandboxDetailSchema, SandboxSchema } from "./schemas.js";

export type SandboxView = z.infer<typeof SandboxSchema>;
export type ListedSandboxView = z.infer<typeof ListedSandboxSchema>;
export type SandboxDetailView = z.infer<typeof SandboxDetailSchema>;

/** Answer of create and connect: what the SDK needs to reach the sandbox's envd. */
export function sandboxView(row: SandboxRow, domain: string | null): SandboxView {
  return {
    templateID: row.template_id,
    sandboxID: row.sandbox_id,
    ...(row.alias ? { alias: row.alias } : {}),
    clientID: row.node_id,
    envdVersion: row.envd_version ?? "",
    ...(row.envd_access_token ? { envdAccessToken: row.envd_access_token } : {}),
    trafficAccessToken: row.traffic_access_token,
    domain,
  };
}

export function listedSandboxView(row: SandboxRow): ListedSandboxView {
  return {
    templateID: row.template_id,
    sandboxID: row.sandbox_id,
    ...(row.alias ? { alias: row.alias } : {}),
    clientID: row.node_id,
    startedAt: row.started_at.toISOString(),
    endAt: row.end_at.toISOString(),
    cpuCount: row.cpu_count,
    memoryMB: row.memory_mb,
    diskSizeMB: row.disk_size_mb,
    metadata: row.metadata,
    state: publicState(row.state),
    envdVersion: row.envd_version ?? "",
    volumeMounts: (row.volume_mounts ?? []).map((m) => ({ name: m.name, path: m.path })),
  };
}

export function sandboxDetailView(row: SandboxRow, domain: string | null): SandboxDetailView {
  return {
    ...listedSandboxView(row),
    ...(row.envd_access_token ? { envdAccessToken: row.envd_access_token } : {}),
    domain,
    allowInternetAccess: row.allow_internet_access,
    ...(row.network ? { network: row.network } : {}),
    lifecycle: { onTimeout: row.auto_pause ? "pause" : "kill", autoResume: row.auto_resume },
  };
}
