/**
 * GET /templates/{templateID}/builds/{buildID}/logs: a build's log by time, page by page
 * (`cursor` in ms, `pageCursor` from the previous page's `nextCursor`, `direction`, `level`).
 */
import { createRoute, z } from "@hono/zod-openapi";
import type { APIContext } from "../context.js";
import type { App } from "../http/env.js";
import { decodeLogCursor, encodeLogCursor } from "../http/page-cursor.js";
import { errorJSON, errorResponses, jsonResponse } from "../http/schemas.js";
import {
  BuildIDParamsSchema,
  LogPageQuerySchema,
  TemplateBuildLogsResponseSchema,
} from "../http/template-schemas.js";
import { buildLogEntryView } from "../http/template-views.js";
import { buildLogs } from "../template/build-logs.js";
import { SECURITY } from "./shared.js";

const route = createRoute({
  method: "get",
  path: "/templates/{templateID}/builds/{buildID}/logs",
  summary: "Get a template build's log",
  tags: ["templates"],
  security: SECURITY,
  request: {
    params: BuildIDParamsSchema,
    query: LogPageQuerySchema.extend({
      cursor: z.coerce
        .number()
        .int()
        .min(0)
        .optional()
        .openapi({ description: "Time in ms of the first (forward) or last (backward) entry" }),
      pageCursor: z.string().max(512).optional().openapi({ description: "nextCursor of the previous page" }),
      direction: z.enum(["forward", "backward"]).optional().openapi({ description: "Default forward" }),
      source: z.enum(["temporary", "persistent"]).optional().openapi({
        description: "Accepted; moat stores every entry as it arrives, so both read the same log",
      }),
    }),
  },
  responses: {
    200: jsonResponse(TemplateBuildLogsResponseSchema, "The page"),
    ...errorResponses,
    404: errorJSON("No such template or build for this team"),
  },
});

export function registerTemplateBuildLogs(app: App, ctx: APIContext): void {
  app.openapi(route, async (c) => {
    const { templateID, buildID } = c.req.valid("param");
    const { source: _source, cursor, pageCursor, ...query } = c.req.valid("query");
    const afterOrdinal = pageCursor !== undefined ? decodeLogCursor(pageCursor) : undefined;
    const page = await buildLogs(ctx, c.get("caller").team, templateID, buildID, {
      ...query,
      ...(cursor !== undefined ? { from: new Date(cursor) } : {}),
      ...(afterOrdinal !== undefined ? { afterOrdinal } : {}),
    });
    return c.json(
      {
        logs: page.entries.map((row) => ({ id: String(row.ordinal), ...buildLogEntryView(row) })),
        ...(page.nextAfterOrdinal !== undefined
          ? { nextCursor: encodeLogCursor(page.nextAfterOrdinal) }
          : {}),
        // Entries are stored as they arrive, so there is one source for live and finished builds.
        source: "persistent" as const,
      },
      200,
    );
  });
}
