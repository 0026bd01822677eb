/**
 * GET /snapshots: one page of the team's snapshots, newest first, optionally those of one sandbox
 * (`sandboxID`) or of one name (`name`); X-Next-Token when more follow.
 */
import { createRoute, z } from "@hono/zod-openapi";
import type { APIContext } from "../context.js";
import type { App } from "../http/env.js";
import { decodePageCursor, encodePageCursor } from "../http/page-cursor.js";
import { errorResponses } from "../http/schemas.js";
import { SnapshotInfoSchema, SnapshotListQuerySchema } from "../http/snapshot-schemas.js";
import { nextTokenHeaders } from "../http/template-schemas.js";
import { listSnapshots } from "../snapshot/list.js";
import { SECURITY } from "./shared.js";

const route = createRoute({
  method: "get",
  path: "/snapshots",
  summary: "List snapshots",
  tags: ["snapshots"],
  security: SECURITY,
  request: { query: SnapshotListQuerySchema },
  responses: {
    200: {
      description: "A page of snapshots",
      headers: nextTokenHeaders,
      content: { "application/json": { schema: z.array(SnapshotInfoSchema) } },
    },
    ...errorResponses,
  },
});

export function registerSnapshotsList(app: App, ctx: APIContext): void {
  app.openapi(route, async (c) => {
    const { sandboxID, name, limit, nextToken } = c.req.valid("query");
    const page = await listSnapshots(ctx, c.get("caller").team, {
      sandboxID,
      name,
      limit: limit ?? 100,
      after: nextToken ? decodePageCursor(nextToken) : undefined,
    });
    if (page.next) c.header("X-Next-Token", encodePageCursor(page.next));
    return c.json(page.snapshots, 200);
  });
}
