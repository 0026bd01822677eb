/**
 * GET /v2/sandboxes: the team's sandboxes, filtered and paged. Headers: X-Next-Token (absent on
 * the last page) and X-Total-Running (running sandboxes matching the filters, over all pages;
 * present when running sandboxes were asked for).
 */
import { createRoute, z } from "@hono/zod-openapi";
import type { APIContext } from "../context.js";
import { countSandboxes, listSandboxes, type SandboxFilter } from "../db/sandboxes.js";
import type { App } from "../http/env.js";
import { errorResponses, ListedSandboxSchema } from "../http/schemas.js";
import { listedSandboxView } from "../http/views.js";
import { RUNNING_STATES } from "../sandbox/states.js";
import {
  decodeCursor,
  encodeCursor,
  MetadataQuerySchema,
  parseMetadataFilter,
  parseStateFilter,
  StateQuerySchema,
} from "./list-filters.js";
import { SECURITY } from "./shared.js";

const route = createRoute({
  method: "get",
  path: "/v2/sandboxes",
  summary: "List sandboxes",
  tags: ["sandboxes"],
  security: SECURITY,
  request: {
    query: z.object({
      metadata: MetadataQuerySchema,
      state: StateQuerySchema,
      order: z.enum(["asc", "desc"]).optional().openapi({ description: "By start time; default desc" }),
      startedAfter: z.iso
        .datetime({ offset: true })
        .optional()
        .openapi({ description: "RFC 3339; sandboxes started at or after it" }),
      template: z.string().optional().openapi({ description: "Template id or alias" }),
      limit: z.coerce
        .number()
        .int()
        .min(1)
        .max(100)
        .optional()
        .openapi({ description: "1-100, default 100" }),
      nextToken: z.string().optional(),
    }),
  },
  responses: {
    200: {
      description: "A page of sandboxes",
      headers: z.object({
        "X-Next-Token": z.string().optional().openapi({ description: "Absent on the last page" }),
        "X-Total-Running": z.string().optional(),
      }),
      content: { "application/json": { schema: z.array(ListedSandboxSchema) } },
    },
    ...errorResponses,
  },
});

export function registerSandboxesList(app: App, ctx: APIContext): void {
  app.openapi(route, async (c) => {
    const query = c.req.valid("query");
    const filter: SandboxFilter = {
      teamID: c.get("caller").team.team_id,
      states: parseStateFilter(query.state),
      metadata: parseMetadataFilter(query.metadata),
      startedAfter: query.startedAfter ? new Date(query.startedAfter) : undefined,
      template: query.template || undefined,
    };
    const limit = query.limit ?? 100;
    const order = query.order ?? "desc";
    const after = query.nextToken ? decodeCursor(query.nextToken) : undefined;
    // One row more than the page tells whether another page follows.
    const rows = await listSandboxes(ctx.db, filter, { order, limit: limit + 1, after });
    const page = rows.slice(0, limit);
    const last = page.at(-1);
    if (rows.length > limit && last) {
      c.header("X-Next-Token", encodeCursor({ startedAt: last.started_at, sandboxID: last.sandbox_id }));
    }
    if (filter.states.includes("running")) {
      const running = await countSandboxes(ctx.db, { ...filter, states: RUNNING_STATES });
      c.header("X-Total-Running", String(running));
    }
    return c.json(page.map(listedSandboxView), 200);
  });
}
