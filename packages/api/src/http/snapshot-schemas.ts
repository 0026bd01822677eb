/** Wire schemas of forks and snapshots (E2B's SandboxForkRequest/Result, SnapshotInfo). */
import { z } from "@hono/zod-openapi";
import { ErrorSchema, SandboxSchema } from "./schemas.js";

const INT32_MAX = 2_147_483_647;

export const SandboxForkRequestSchema = z
  .strictObject({
    timeout: z
      .number()
      .int()
      .min(1)
      .max(INT32_MAX)
      .optional()
      .openapi({ description: "Seconds the forks live; default 15", format: "int32" }),
    count: z.number().int().min(-INT32_MAX).max(INT32_MAX).optional().openapi({
      description: "Forks to make, from 1 (the default) up to the team's free sandboxes",
      format: "int32",
    }),
  })
  .openapi("SandboxForkRequest");

export const SandboxForkResultSchema = z
  .object({ sandbox: SandboxSchema.optional(), error: ErrorSchema.optional() })
  .openapi("SandboxForkResult", { description: "Exactly one of sandbox or error" });

export const SandboxSnapshotRequestSchema = z
  .strictObject({
    name: z
      .string()
      .max(300)
      .optional()
      .openapi({ description: "name, name:tag or team/name:tag; unnamed snapshots are named by their id" }),
  })
  .openapi("SandboxSnapshotRequest");

export const SnapshotInfoSchema = z
  .object({
    snapshotID: z.string().openapi({ description: "What Sandbox.create takes: team/name:tag, or id:tag" }),
    names: z.array(z.string()),
  })
  .openapi("SnapshotInfo");

export const SnapshotListQuerySchema = z.object({
  sandboxID: z.string().max(64).optional(),
  name: z.string().max(300).optional(),
  limit: z.coerce.number().int().min(1).max(100).optional().openapi({ description: "1-100, default 100" }),
  nextToken: z.string().optional(),
});
