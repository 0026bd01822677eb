/**
 * GET /templates/aliases/{alias}: whether a template name exists, for Template.exists. 200 with
 * its id for the team's own (and public ones), 404 when none has it — and for another team's
 * private one, which reads exactly as a missing one, so that no team learns what names or ids
 * another team's private templates have. `base` is the base template.
 */
import { createRoute, z } from "@hono/zod-openapi";
import { findBuiltinTemplate } from "@moat/shared";
import type { APIContext } from "../context.js";
import { TemplateNotFoundError } from "../errors.js";
import type { App } from "../http/env.js";
import { errorJSON, errorResponses, jsonResponse } from "../http/schemas.js";
import { TemplateAliasResponseSchema } from "../http/template-schemas.js";
import { BASE_TEMPLATE, parseTemplateReference } from "../template/names.js";
import { lookupTemplate, readyBuildOf, usableBy } from "../template/resolve.js";
import { SECURITY } from "./shared.js";

const route = createRoute({
  method: "get",
  path: "/templates/aliases/{alias}",
  summary: "Check a template name",
  tags: ["templates"],
  security: SECURITY,
  request: {
    params: z.object({
      alias: z
        .string()
        .min(1)
        .max(300)
        .openapi({ param: { name: "alias", in: "path" }, description: "name, name:tag or team/name" }),
    }),
  },
  responses: {
    200: jsonResponse(TemplateAliasResponseSchema, "The template"),
    ...errorResponses,
    404: errorJSON("No template the team may use has the name"),
  },
});

export function registerTemplateAlias(app: App, ctx: APIContext): void {
  app.openapi(route, async (c) => {
    const team = c.get("caller").team;
    const { alias } = c.req.valid("param");
    const ref = parseTemplateReference(alias, "alias");
    if (ref.namespace === undefined && ref.name === BASE_TEMPLATE && ref.tag === undefined) {
      return c.json({ templateID: BASE_TEMPLATE, public: true }, 200);
    }
    const builtin =
      ref.namespace === undefined && ref.tag === undefined ? findBuiltinTemplate(ref.name) : undefined;
    if (builtin) return c.json({ templateID: builtin.templateID, public: true }, 200);
    const template = await lookupTemplate(ctx.db, team, ref);
    if (!template || !usableBy(team, template)) throw new TemplateNotFoundError(alias);
    if (ref.tag !== undefined && !(await readyBuildOf(ctx.db, template, ref.tag))) {
      throw new TemplateNotFoundError(alias, `template '${alias}' has no ready build tagged '${ref.tag}'`);
    }
    return c.json({ templateID: template.template_id, public: template.public }, 200);
  });
}
