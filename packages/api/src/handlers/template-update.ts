/**
 * PATCH /v2/templates/{templateID}: publish or unpublish a team's template (the CLI's `template
 * publish`/`unpublish`). A public template is usable by every team, as `team/name` or by id.
 */
import { createRoute } from "@hono/zod-openapi";
import type { APIContext } from "../context.js";
import { setTemplatePublic } from "../db/templates.js";
import { InvalidRequestError, TemplateNotFoundError } from "../errors.js";
import type { App } from "../http/env.js";
import { errorJSON, errorResponses, jsonBody, jsonResponse } from "../http/schemas.js";
import {
  TemplateIDParamsSchema,
  TemplateUpdateRequestSchema,
  TemplateUpdateResponseSchema,
} from "../http/template-schemas.js";
import { templateNames } from "../template/names.js";
import { findOwnTemplate } from "../template/resolve.js";
import { SECURITY } from "./shared.js";

const route = createRoute({
  method: "patch",
  path: "/v2/templates/{templateID}",
  summary: "Update a template",
  tags: ["templates"],
  security: SECURITY,
  request: { params: TemplateIDParamsSchema, body: jsonBody(TemplateUpdateRequestSchema) },
  responses: {
    200: jsonResponse(TemplateUpdateResponseSchema, "The template's names"),
    ...errorResponses,
    404: errorJSON("No such template for this team"),
  },
});

export function registerTemplateUpdate(app: App, ctx: APIContext): void {
  app.openapi(route, async (c) => {
    const team = c.get("caller").team;
    const { templateID } = c.req.valid("param");
    const body = c.req.valid("json");
    let template = await findOwnTemplate(ctx.db, team, templateID);
    if (body.public === true && template.snapshot) {
      throw new InvalidRequestError(
        "a snapshot cannot be made public: it holds its sandbox's memory and files",
      );
    }
    if (body.public !== undefined) {
      const updated = await setTemplatePublic(ctx.db, template.template_id, body.public);
      if (!updated) throw new TemplateNotFoundError(templateID);
      template = updated;
      ctx.logger.info({ templateID: template.template_id, public: body.public }, "template updated");
    }
    return c.json({ names: templateNames(team, template.name).names }, 200);
  });
}
