/**
 * GET /templates/{templateID}/files/{hash}: where to upload a COPY step's files (step 2 of
 * Template.build). `present: true` when the team uploaded that hash already; otherwise a signed
 * URL (template/file-urls.ts) the SDK PUTs the tar to without its API key.
 */
import { createRoute, z } from "@hono/zod-openapi";
import type { APIContext } from "../context.js";
import type { App } from "../http/env.js";
import { errorJSON, errorResponses, jsonResponse } from "../http/schemas.js";
import { TemplateBuildFileUploadSchema, TemplateIDParamsSchema } from "../http/template-schemas.js";
import { fileUploadLink } from "../template/files.js";
import { SECURITY } from "./shared.js";

const route = createRoute({
  method: "get",
  path: "/templates/{templateID}/files/{hash}",
  summary: "Upload link for a COPY step's files",
  tags: ["templates"],
  security: SECURITY,
  request: {
    params: TemplateIDParamsSchema.extend({
      hash: z
        .string()
        .openapi({ param: { name: "hash", in: "path" }, description: "SHA-256 hex of the files" }),
    }),
  },
  responses: {
    201: jsonResponse(TemplateBuildFileUploadSchema, "Whether the files are there, else where to PUT them"),
    ...errorResponses,
    404: errorJSON("No such template for this team"),
  },
});

export function registerTemplateFilesLink(app: App, ctx: APIContext): void {
  app.openapi(route, async (c) => {
    const { templateID, hash } = c.req.valid("param");
    return c.json(await fileUploadLink(ctx, c.get("caller").team, templateID, hash), 201);
  });
}
