/**
 * The wire schemas of the volume routes and the volume content routes, named as in the SDK's copies
 * of E2B's specs (`Volume`, `VolumeAndToken`, `NewVolume`; `VolumeEntryStat`). moat adds `sizeMB`
 * (the volume's size) and, on GET /volumes/{id}, `usedBytes`; the SDK ignores both.
 */

import { timestampDate } from "@bufbuild/protobuf/wkt";
import { z } from "@hono/zod-openapi";
import type { VolumeEntry } from "@moat/shared/gen/orchestrator";
import type { VolumeRow } from "../db/schema.js";
import type { VolumeInfo } from "../volume/volumes.js";

/** uint32 but (uint32)-1, which chown reads as "unchanged". */
const MAX_ID = 0xffff_fffe;

export const NewVolumeSchema = z
  .strictObject({
    name: z
      .string()
      .max(1024)
      .openapi({ description: "1 to 64 letters, digits, '-' or '_'; unique in the team", example: "data" }),
  })
  .openapi("NewVolume");

const volumeFields = {
  volumeID: z.string(),
  name: z.string(),
  sizeMB: z.number().int().openapi({ description: "moat: the volume's size in MiB; writes past it fail" }),
};

export const VolumeSchema = z.object(volumeFields).openapi("Volume");

export const VolumeAndTokenSchema = z
  .object({
    ...volumeFields,
    token: z.string().openapi({ description: "Authorization: Bearer <token> of the volume content routes" }),
    domain: z.string().optional().openapi({
      description: "The SDK sends content requests to https://api.<domain> unless E2B_VOLUME_API_URL is set",
    }),
    usedBytes: z
      .number()
      .int()
      .optional()
      .openapi({ description: "moat (GET only): bytes in use on the volume, when its node answered" }),
  })
  .openapi("VolumeAndToken");

export const VolumeIDParamsSchema = z.object({
  volumeID: z
    .string()
    .max(128)
    .openapi({ param: { name: "volumeID", in: "path" }, example: "a1b2c3d4e5f6g7h8i9j0" }),
});

export function volumeView(row: VolumeRow): z.infer<typeof VolumeSchema> {
  return { volumeID: row.volume_id, name: row.name, sizeMB: row.size_mb };
}

export function volumeAndTokenView(
  info: VolumeInfo,
  domain: string | null,
): z.infer<typeof VolumeAndTokenSchema> {
  return {
    ...volumeView(info.row),
    token: info.token,
    ...(domain ? { domain } : {}),
    ...(info.usedBytes !== undefined ? { usedBytes: info.usedBytes } : {}),
  };
}

export const VolumeEntryStatSchema = z
  .object({
    name: z.string(),
    type: z.enum(["unknown", "file", "directory", "symlink"]),
    path: z.string(),
    size: z.number().int(),
    mode: z.number().int().openapi({ description: "Permission bits" }),
    uid: z.number().int(),
    gid: z.number().int(),
    atime: z.string().openapi({ format: "date-time" }),
    mtime: z.string().openapi({ format: "date-time" }),
    ctime: z.string().openapi({ format: "date-time" }),
    target: z.string().optional().openapi({ description: "A symbolic link's target (never followed)" }),
  })
  .openapi("VolumeEntryStat");

export function entryView(entry: VolumeEntry): z.infer<typeof VolumeEntryStatSchema> {
  const date = (t: VolumeEntry["atime"]) => (t ? timestampDate(t).toISOString() : new Date(0).toISOString());
  return {
    name: entry.name,
    type: (["file", "directory", "symlink"].includes(entry.type) ? entry.type : "unknown") as
      | "unknown"
      | "file"
      | "directory"
      | "symlink",
    path: entry.path,
    size: Number(entry.size),
    mode: entry.mode,
    uid: entry.uid,
    gid: entry.gid,
    atime: date(entry.atime),
    mtime: date(entry.mtime),
    ctime: date(entry.ctime),
    ...(entry.target ? { target: entry.target } : {}),
  };
}

const PathQuery = z
  .string()
  .max(8192)
  .openapi({ description: "From the volume's root ('/' is the root); links are never followed" });
const IdQuery = z.coerce.number().int().min(0).max(MAX_ID).optional();
const ModeQuery = z.coerce
  .number()
  .int()
  .min(0)
  .max(0o7777)
  .optional()
  .openapi({ description: "Permission bits (setuid and setgid are refused)" });
const BoolQuery = z.enum(["true", "false"]).optional();

export const ContentPathQuerySchema = z.object({ path: PathQuery });

export const ContentListQuerySchema = z.object({
  path: PathQuery,
  depth: z.coerce
    .number()
    .int()
    .min(0)
    .max(MAX_ID)
    .optional()
    .openapi({ description: "Levels to list (default 1, at most 32)" }),
});

export const ContentWriteQuerySchema = z.object({
  path: PathQuery,
  uid: IdQuery,
  gid: IdQuery,
  mode: ModeQuery,
  force: BoolQuery.openapi({
    description:
      "makeDir: make missing parents, and an existing directory is fine; file writes replace anyway",
  }),
});

export const ContentMetadataBodySchema = z
  .strictObject({
    uid: z.number().int().min(0).max(MAX_ID).optional(),
    gid: z.number().int().min(0).max(MAX_ID).optional(),
    mode: z.number().int().min(0).max(0o7777).optional(),
  })
  .openapi("VolumeMetadataUpdate");
