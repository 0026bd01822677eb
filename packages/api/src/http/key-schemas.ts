/** Wire schemas of API keys and access tokens, as E2B's OpenAPI names them. */
import { z } from "@hono/zod-openapi";

export const MaskSchema = z
  .object({
    prefix: z.string(),
    valueLength: z.number().int(),
    maskedValuePrefix: z.string(),
    maskedValueSuffix: z.string(),
  })
  .openapi("IdentifierMaskingDetails");

const keyFields = {
  id: z.string(),
  name: z.string(),
  mask: MaskSchema,
  createdAt: z.string().openapi({ format: "date-time" }),
  createdBy: z.object({ id: z.string(), email: z.null() }).nullable().openapi({
    description: "The API key or access token (its id) that created this key; null: the operator",
  }),
  lastUsed: z
    .string()
    .nullable()
    .openapi({ format: "date-time", description: "Refreshed at most once a minute" }),
};

export const TeamAPIKeySchema = z.object(keyFields).openapi("TeamAPIKey");
export const CreatedTeamAPIKeySchema = z
  .object({ ...keyFields, key: z.string().openapi({ description: "The key itself, shown only this once" }) })
  .openapi("CreatedTeamAPIKey");

const Name = z.string().trim().min(1).max(256);
export const NewTeamAPIKeySchema = z.strictObject({ name: Name }).openapi("NewTeamAPIKey");
export const UpdateTeamAPIKeySchema = z.strictObject({ name: Name }).openapi("UpdateTeamAPIKey");
export const NewAccessTokenSchema = z.strictObject({ name: Name }).openapi("NewAccessToken");

export const CreatedAccessTokenSchema = z
  .object({
    id: z.string(),
    name: z.string(),
    token: z.string().openapi({ description: "The token itself, shown only this once" }),
    mask: MaskSchema,
    createdAt: z.string().openapi({ format: "date-time" }),
  })
  .openapi("CreatedAccessToken");

export const APIKeyIDParamsSchema = z.object({
  apiKeyID: z
    .string()
    .min(1)
    .max(64)
    .openapi({ param: { name: "apiKeyID", in: "path" } }),
});

export const AccessTokenIDParamsSchema = z.object({
  accessTokenID: z
    .string()
    .min(1)
    .max(64)
    .openapi({ param: { name: "accessTokenID", in: "path" } }),
});
